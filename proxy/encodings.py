"""The tiktoken encodings shipped in the package: definitions, integrity check, loading.

tiktoken normally downloads its BPE files on first use. Here each encoding is defined once
(pattern and special tokens as in ``tiktoken_ext.openai_public``) and built by ``load_encoding``
from the rank file bundled in ``data/tokenizers``, after checking it against tiktoken's published
sha256; ``tiktoken.get_encoding`` is never called, so nothing is fetched at run time.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import lzma
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import tiktoken

from proxy.errors import ProxyError

log = logging.getLogger(__name__)

TOKENIZER_DIR = Path(__file__).with_name("data") / "tokenizers"

_ENDOFTEXT = "<|endoftext|>"
_FIM_PREFIX = "<|fim_prefix|>"
_FIM_MIDDLE = "<|fim_middle|>"
_FIM_SUFFIX = "<|fim_suffix|>"
_ENDOFPROMPT = "<|endofprompt|>"


class TokenizerLoadError(ProxyError):
    """A tokenizer could not be loaded: a hub tokenizer unreachable, a bad local file."""

    status = 503
    type = "api_error"
    code = "tokenizer_unavailable"

    def __init__(self, message: str, *, identifier: str, revision: str | None = None) -> None:
        super().__init__(message)
        self.identifier = identifier
        self.revision = revision


@dataclass(frozen=True, slots=True)
class EncodingSpec:
    """A bundled tiktoken encoding; pattern and special tokens as in ``tiktoken_ext.openai_public``."""

    name: str
    filename: str
    sha256: str
    pat_str: str
    special_tokens: Mapping[str, int]
    # Cookbook tool-definition overhead per function: 7 for gpt-4o-family models, 10 for gpt-4.
    tool_func_init: int


ENCODINGS: Mapping[str, EncodingSpec] = MappingProxyType(
    {
        "cl100k_base": EncodingSpec(
            name="cl100k_base",
            filename="cl100k_base.tiktoken.xz",
            sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
            pat_str=(
                r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|"""
                r""" ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
            ),
            special_tokens=MappingProxyType(
                {
                    _ENDOFTEXT: 100257,
                    _FIM_PREFIX: 100258,
                    _FIM_MIDDLE: 100259,
                    _FIM_SUFFIX: 100260,
                    _ENDOFPROMPT: 100276,
                }
            ),
            tool_func_init=10,
        ),
        "o200k_base": EncodingSpec(
            name="o200k_base",
            filename="o200k_base.tiktoken.xz",
            sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
            pat_str=(
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"""
                r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"""
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"""
                r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"""
                r"""\p{N}{1,3}|"""
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*|"""
                r"""\s*[\r\n]+|"""
                r"""\s+(?!\S)|"""
                r"""\s+"""
            ),
            special_tokens=MappingProxyType({_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018}),
            tool_func_init=7,
        ),
    }
)

# o200k_harmony (gpt-oss) has o200k_base's ranks and pattern; only its special tokens differ,
# and counting treats special-token text as ordinary text.
ENCODING_ALIASES: Mapping[str, str] = MappingProxyType({"o200k_harmony": "o200k_base"})


def load_encoding(data_dir: Path, name: str) -> tiktoken.Encoding:
    """Build the bundled encoding ``name`` from its rank file in ``data_dir``.

    Raises ``TokenizerLoadError`` for an unknown name, an unreadable file, or a file whose
    sha256 is not the published one.
    """
    spec = ENCODINGS.get(name)
    if spec is None:
        raise TokenizerLoadError(f"no bundled tiktoken encoding {name!r}", identifier=name)
    path = data_dir / spec.filename
    try:
        raw = lzma.decompress(path.read_bytes())
    except (OSError, lzma.LZMAError) as exc:
        raise TokenizerLoadError(
            f"tiktoken encoding {name!r} cannot be read from {path}: {exc}", identifier=name
        ) from exc
    digest = hashlib.sha256(raw).hexdigest()
    if digest != spec.sha256:
        raise TokenizerLoadError(
            f"tiktoken encoding {name!r} at {path} is corrupt: sha256 {digest}, "
            f"expected {spec.sha256}",
            identifier=name,
        )
    # The .tiktoken format: one "<base64 token> <rank>" per line.
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in raw.splitlines() if line)
    }
    log.info("loaded tiktoken encoding %s (%d ranks) from %s", name, len(ranks), path)
    return tiktoken.Encoding(
        name,
        pat_str=spec.pat_str,
        mergeable_ranks=ranks,
        special_tokens=dict(spec.special_tokens),
    )
