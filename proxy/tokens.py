"""Token counting for tpm limits, the context-window pre-check and ``/utils/token_counter``.

Three tokenizers, picked per call:

- ``custom_tokenizer`` given (a deployment's ``model_info.custom_tokenizer``): the Hugging Face
  tokenizer it names, through the ``tokenizers`` package — ``"huggingface_tokenizer"``.
- an OpenAI model (``gpt-4o``, ``openai/gpt-4.1-mini``, ``azure/gpt-35-turbo``, ``o3-mini``,
  ``text-embedding-3-small``, …): tiktoken with the model's encoding (``o200k_base`` or
  ``cl100k_base``, chosen by tiktoken's own model table) — ``"openai_tokenizer"``.
- anything else: an approximation, ``cl100k_base`` counts (``"approximate (cl100k_base)"``), or
  characters / 4 if that encoding cannot be loaded (``"approximate (characters/4)"``).

Chat messages, tool definitions and prompts are counted as OpenAI bills them:
``proxy/token_shapes.py``. The same overheads are applied to the other tokenizers, as an
estimate of their chat templates.

Large inputs never hold the gevent hub: see ``proxy/hub_counting.py``.

Offline: the tiktoken encodings are the ones bundled with the package (``proxy.encodings``),
never downloaded, loaded once per process. Encodings and tokenizers load on first use or in
``preload()``, which the app calls at boot; after that a count does no I/O.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import requests
import tiktoken
from tiktoken.model import encoding_name_for_model
from tokenizers import Tokenizer

from proxy.encodings import (
    ENCODING_ALIASES,
    ENCODINGS,
    TOKENIZER_DIR,
    TokenizerLoadError,
    load_encoding,
)
from proxy.encodings import EncodingSpec as EncodingSpec

# ENCODINGS, TOKENIZER_DIR, EncodingSpec and TokenizerLoadError are part of this module's API too.
from proxy.hub_counting import HubFriendly, LimitPassed
from proxy.token_shapes import (
    TOKENS_PER_MESSAGE,
    TOKENS_PER_NAME,
    TextCounter,
    approximate_len,
    count_messages,
    count_prompt,
    count_tools,
)

log = logging.getLogger(__name__)

OPENAI_TOKENIZER = "openai_tokenizer"
HUGGINGFACE_TOKENIZER = "huggingface_tokenizer"
APPROXIMATE_ENCODING = "cl100k_base"

# Distinct model names whose tokenizer choice is remembered (bounded: names may come from callers).
MODEL_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class TokenCount:
    """The result of a count; the shape ``/utils/token_counter`` returns."""

    total_tokens: int
    tokenizer_type: str
    model_used: str


# OpenAI model names tiktoken's table does not cover (yet).
_EXTRA_MODEL_PREFIXES: tuple[tuple[str, str], ...] = (
    ("codex-", "o200k_base"),  # codex-mini-latest, an o4-mini
    ("gpt-oss", "o200k_base"),  # gpt-oss:20b as Ollama names it
)


@dataclass(frozen=True, slots=True)
class _Choice:
    """How one model name is counted; resolved once per name."""

    kind: str  # "openai" or "approximate"
    encoding: str  # a key of ENCODINGS
    tokens_per_message: int
    tokens_per_name: int


class TokenCounter:
    """Counts prompt tokens; one per app, sharing loaded encodings and tokenizers."""

    def __init__(
        self, data_dir: str | Path = TOKENIZER_DIR, *, hub_retry_after: float = 60.0
    ) -> None:
        self._data_dir = Path(data_dir)
        # A hub tokenizer that failed is not fetched again for this long: a fetch that fails
        # takes seconds (the hub client retries), and it must not be paid on every request.
        self._hub_retry_after = hub_retry_after
        # Two locks: a slow Hub fetch must not hold up loading a bundled encoding.
        self._encoding_lock = threading.Lock()
        self._tokenizer_lock = threading.Lock()
        self._encodings: dict[str, tiktoken.Encoding | None] = {}
        self._encoding_errors: dict[str, TokenizerLoadError] = {}
        self._tokenizers: dict[tuple[str, str], Tokenizer] = {}
        self._tokenizer_failures: dict[tuple[str, str], tuple[float, str]] = {}
        self._choose = lru_cache(maxsize=MODEL_CACHE_SIZE)(_choose)

    # -- loading -------------------------------------------------------------------------------

    def preload(self, encodings: Sequence[str] = tuple(ENCODINGS)) -> None:
        """Load the bundled encodings now (about a second), so no request pays for it."""
        for name in encodings:
            self._encoding_or_none(name)

    def encoding(self, name: str) -> tiktoken.Encoding:
        """The bundled tiktoken encoding ``name``, loaded once; raises if it cannot be."""
        encoding = self._encoding_or_none(name)
        if encoding is None:
            raise self._encoding_errors[name]
        return encoding

    def _encoding_or_none(self, name: str) -> tiktoken.Encoding | None:
        name = ENCODING_ALIASES.get(name, name)
        if name in self._encodings:
            return self._encodings[name]
        with self._encoding_lock:
            if name not in self._encodings:
                try:
                    self._encodings[name] = load_encoding(self._data_dir, name)
                except TokenizerLoadError as exc:
                    # Remembered, so a missing file costs one log line, not I/O per request.
                    log.error("%s", exc.message)
                    self._encoding_errors[name] = exc
                    self._encodings[name] = None
        return self._encodings[name]

    def load_tokenizer(self, custom_tokenizer: Mapping[str, Any]) -> Tokenizer:
        """The Hugging Face tokenizer a ``custom_tokenizer`` block names, cached per
        (identifier, revision).

        ``identifier`` is a local ``tokenizer.json``, a directory holding one, or a Hub repo id
        (fetched with ``revision`` and ``auth_token``). Call it at boot to fail early and to keep
        the fetch off the request path.
        """
        identifier = custom_tokenizer.get("identifier")
        if not isinstance(identifier, str) or not identifier:
            raise TokenizerLoadError(
                "custom_tokenizer.identifier must be a Hugging Face repo id or a path",
                identifier=str(identifier),
            )
        revision = custom_tokenizer.get("revision") or "main"
        key = (identifier, revision)
        tokenizer = self._tokenizers.get(key)
        if tokenizer is not None:
            return tokenizer
        with self._tokenizer_lock:
            tokenizer = self._tokenizers.get(key)
            if tokenizer is None:
                tokenizer = self._fetch_tokenizer(
                    identifier, revision, custom_tokenizer.get("auth_token")
                )
                self._tokenizers[key] = tokenizer
        return tokenizer

    def _fetch_tokenizer(self, identifier: str, revision: str, token: str | None) -> Tokenizer:
        key = (identifier, revision)
        failed = self._tokenizer_failures.get(key)
        if failed is not None and time.monotonic() - failed[0] < self._hub_retry_after:
            raise TokenizerLoadError(failed[1], identifier=identifier, revision=revision)
        path = _local_tokenizer_path(identifier)
        try:
            if path is not None:
                tokenizer = Tokenizer.from_file(str(path))
            else:
                tokenizer = Tokenizer.from_str(download_tokenizer_json(identifier, revision, token))
        except Exception as exc:  # the Rust side and the hub client raise many kinds
            if path is not None:
                message = f"custom tokenizer {identifier!r} could not be loaded from {path}: {exc}"
            else:
                message = (
                    f"custom tokenizer {identifier!r} (revision {revision!r}) could not be "
                    f"fetched from the Hugging Face Hub: {exc}"
                )
                self._tokenizer_failures[key] = (time.monotonic(), message)
            raise TokenizerLoadError(message, identifier=identifier, revision=revision) from exc
        self._tokenizer_failures.pop(key, None)
        # A tokenizer.json may carry truncation or padding settings; either would skew a count.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        log.info("loaded custom tokenizer %s@%s", identifier, revision)
        return tokenizer

    # -- counting ------------------------------------------------------------------------------

    def count(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]] | None = None,
        prompt: str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]] | None = None,
        custom_tokenizer: Mapping[str, Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        limit: int | None = None,
    ) -> TokenCount:
        """Tokens of a chat request (``messages``, ``tools``) and/or a completion ``prompt``.

        With ``limit``, counting stops once the count passes it; the total is then some number
        above ``limit``, not the exact count.

        ``model`` is the model the request goes to (a deployment's ``litellm_params.model`` or
        its ``base_model``); a provider prefix is allowed. Raises ``TokenizerLoadError`` only
        for a ``custom_tokenizer`` that cannot be loaded.
        """
        model_used = model.split("/", 1)[1] if "/" in model else model
        choice = self._choose(model)
        tool_func_init = ENCODINGS[choice.encoding].tool_func_init
        hf_tokenizer: Tokenizer | None = None
        if custom_tokenizer:
            hf_tokenizer = self.load_tokenizer(custom_tokenizer)
            tokenizer_type = HUGGINGFACE_TOKENIZER
            text_len = _hf_counter(hf_tokenizer)
        else:
            encoding = self._encoding_or_none(choice.encoding)
            if encoding is None:
                tokenizer_type = "approximate (characters/4)"
                text_len = approximate_len
            else:
                tokenizer_type = (
                    OPENAI_TOKENIZER
                    if choice.kind == "openai"
                    else f"approximate ({choice.encoding})"
                )
                text_len = _tiktoken_counter(encoding)

        total = 0
        if text_len is not approximate_len:
            text_len = HubFriendly(text_len, limit)
        try:
            if messages:
                total += count_messages(
                    messages, text_len, choice.tokens_per_message, choice.tokens_per_name
                )
            if tools:
                total += count_tools(tools, text_len, tool_func_init)
            if prompt is not None:
                total += count_prompt(prompt, text_len, hf_tokenizer)
        except LimitPassed as passed:
            total = passed.seen
        return TokenCount(total_tokens=total, tokenizer_type=tokenizer_type, model_used=model_used)


# -- model → tokenizer ---------------------------------------------------------------------------


def _choose(model: str) -> _Choice:
    """Pick the encoding and chat overheads for a model name (memoised per counter)."""
    name = model.rsplit("/", 1)[-1].strip().lower()
    encoding = _openai_encoding(name)
    if encoding is None:
        return _Choice("approximate", APPROXIMATE_ENCODING, TOKENS_PER_MESSAGE, TOKENS_PER_NAME)
    if name == "gpt-3.5-turbo-0301":
        # Its format was <|im_start|>{role or name}\n{content}<|im_end|>\n.
        return _Choice("openai", encoding, 4, -1)
    return _Choice("openai", encoding, TOKENS_PER_MESSAGE, TOKENS_PER_NAME)


def _openai_encoding(name: str) -> str | None:
    """The bundled encoding an OpenAI model uses, or None for other (or retired) models."""
    try:
        encoding = encoding_name_for_model(name)
    except KeyError:
        encoding = next(
            (enc for prefix, enc in _EXTRA_MODEL_PREFIXES if name.startswith(prefix)), ""
        )
    encoding = ENCODING_ALIASES.get(encoding, encoding)
    # p50k/r50k models (text-davinci-003 and older) are retired; they get the approximation.
    return encoding if encoding in ENCODINGS else None


def _local_tokenizer_path(identifier: str) -> Path | None:
    """The tokenizer.json an identifier points at on disk, or None for a Hub repo id."""
    path = Path(identifier).expanduser()
    if path.is_dir():
        return path / "tokenizer.json"
    if path.is_file() or identifier.endswith(".json"):
        return path
    if identifier.startswith(("/", "./", "../", "~")):
        return path  # clearly meant as a path: report it missing, don't ask the Hub
    return None


# -- text counters -------------------------------------------------------------------------------


def _tiktoken_counter(encoding: tiktoken.Encoding) -> TextCounter:
    # encode_ordinary: text that looks like a special token counts as the text it is.
    encode = encoding.encode_ordinary

    def count(text: str) -> int:
        return len(encode(text))

    return count


def _hf_counter(tokenizer: Tokenizer) -> TextCounter:
    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return count


HUB_TIMEOUT = (3.05, 15.0)  # connect, read: one attempt, so an unreachable hub fails in seconds


def download_tokenizer_json(identifier: str, revision: str, token: str | None) -> str:
    """``tokenizer.json`` of a Hugging Face Hub repository, in one request.

    The hub client behind ``Tokenizer.from_pretrained`` retries a failed connection five times
    with backoff (~25 s); one plain GET fails at once and says why. ``HF_ENDPOINT`` points it at
    a mirror.
    """
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    url = f"{endpoint}/{identifier}/resolve/{revision}/tokenizer.json"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.get(url, headers=headers, timeout=HUB_TIMEOUT)
    if response.status_code in (401, 403):
        raise OSError(f"the hub refused access ({response.status_code}); check auth_token")
    if response.status_code == 404:
        raise OSError("no tokenizer.json at that identifier and revision (404)")
    if response.status_code != 200:
        raise OSError(f"the hub answered {response.status_code}")
    return response.text
