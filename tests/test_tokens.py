"""Token counting: OpenAI's figures, offline encodings, custom Hugging Face tokenizers."""

from __future__ import annotations

import builtins
import lzma
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import requests
import tiktoken
from tiktoken_ext import openai_public
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

import proxy.tokens as tokens_module
from proxy.token_shapes import DEFAULT_IMAGE_TOKENS, LOW_DETAIL_IMAGE_TOKENS
from proxy.tokens import (
    ENCODINGS,
    TOKENIZER_DIR,
    TokenCount,
    TokenCounter,
    TokenizerLoadError,
)

# The example conversation of OpenAI's cookbook "How to count tokens with tiktoken", whose
# prompt_tokens the cookbook shows as reported by the OpenAI API.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]

COOKBOOK_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]

COOKBOOK_TOOL_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]

BIRTHDAY = "お誕生日おめでとう"  # 9 tokens in cl100k_base, 8 in o200k_base (cookbook)


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    counter = TokenCounter()
    counter.preload()
    return counter


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Any attempt to reach the network fails loudly, as it would on an offline host."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(requests.Session, "request", refuse)
    # tiktoken's own loader would download into (or read) its cache; make both impossible.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-tiktoken-cache"))
    monkeypatch.setattr(tiktoken.registry, "get_encoding", refuse)
    monkeypatch.setattr(tiktoken, "get_encoding", refuse)


# -- OpenAI's published figures ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello world", 2),
        # Figures stated in the cookbook for cl100k_base.
        ("tiktoken is great!", 6),
        ("antidisestablishmentarianism", 6),
        ("2 + 2 = 4", 7),
        (BIRTHDAY, 9),
    ],
)
def test_cl100k_text_counts(counter: TokenCounter, text: str, expected: int) -> None:
    result = counter.count("gpt-4", prompt=text)
    assert result == TokenCount(expected, "openai_tokenizer", "gpt-4")


def test_o200k_text_counts(counter: TokenCounter) -> None:
    assert counter.count("gpt-4o", prompt=BIRTHDAY).total_tokens == 8  # cookbook figure
    assert counter.count("gpt-4o", prompt="hello world").total_tokens == 2


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        # prompt_tokens the cookbook reports from the OpenAI API for COOKBOOK_MESSAGES.
        ("gpt-3.5-turbo", 129),
        ("gpt-4-0613", 129),
        ("gpt-4", 129),
        ("gpt-4o", 124),
        ("gpt-4o-mini", 124),
        ("gpt-3.5-turbo-0301", 127),  # 4 tokens per message, -1 per name
    ],
)
def test_chat_counts_match_cookbook(counter: TokenCounter, model: str, expected: int) -> None:
    result = counter.count(model, messages=COOKBOOK_MESSAGES)
    assert result.total_tokens == expected
    assert result.tokenizer_type == "openai_tokenizer"


@pytest.mark.parametrize(
    ("model", "expected"),
    [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)],
)
def test_tool_counts_match_cookbook(counter: TokenCounter, model: str, expected: int) -> None:
    result = counter.count(model, messages=COOKBOOK_TOOL_MESSAGES, tools=COOKBOOK_TOOLS)
    assert result.total_tokens == expected


def test_legacy_functions_count_like_tools(counter: TokenCounter) -> None:
    functions = [tool["function"] for tool in COOKBOOK_TOOLS]
    assert counter.count("gpt-4o", tools=functions) == counter.count("gpt-4o", tools=COOKBOOK_TOOLS)


# -- which encoding for which model -------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-2024-08-06", "o200k_base"),
        ("openai/gpt-4o-mini", "o200k_base"),
        ("azure/gpt-4o", "o200k_base"),
        ("gpt-4.1", "o200k_base"),
        ("gpt-4.1-nano-2025-04-14", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:my-org::abc123", "o200k_base"),
        ("groq/openai/gpt-oss-120b", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo-16k", "cl100k_base"),
        ("azure/gpt-35-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("davinci-002", "cl100k_base"),
    ],
)
def test_openai_models_use_their_encoding(counter: TokenCounter, model: str, encoding: str) -> None:
    result = counter.count(model, prompt=BIRTHDAY)
    assert result.tokenizer_type == "openai_tokenizer"
    assert result.total_tokens == {"o200k_base": 8, "cl100k_base": 9}[encoding]


def test_model_used_drops_the_provider_prefix(counter: TokenCounter) -> None:
    assert counter.count("openai/gpt-4o", prompt="x").model_used == "gpt-4o"
    assert counter.count("gpt-4o", prompt="x").model_used == "gpt-4o"
    assert counter.count("huggingface/org/model", prompt="x").model_used == "org/model"


def test_bundled_encodings_match_tiktoken_definitions(
    counter: TokenCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our copies of pat_str and special tokens are tiktoken's own, for the same ranks."""
    for name in ENCODINGS:
        ours = counter.encoding(name)
        monkeypatch.setattr(
            openai_public,
            "load_tiktoken_bpe",
            lambda *args, _ranks=ours._mergeable_ranks, **kwargs: _ranks,
        )
        reference = getattr(openai_public, name)()
        assert ours._pat_str == reference["pat_str"]
        assert ours._special_tokens == reference["special_tokens"]
        assert ours.n_vocab == tiktoken.Encoding(**reference).n_vocab


# -- offline, integrity, no per-call I/O --------------------------------------------------------


def test_counts_offline_from_bundled_files(no_network: None) -> None:
    fresh = TokenCounter()  # loads the encodings here, with the network refused
    assert fresh.count("gpt-4", messages=COOKBOOK_MESSAGES).total_tokens == 129
    assert fresh.count("gpt-4o", messages=COOKBOOK_MESSAGES).total_tokens == 124
    assert fresh.count("claude-3-haiku", prompt="hello world").total_tokens == 2


def test_packaged_files_are_small() -> None:
    total = sum(p.stat().st_size for p in TOKENIZER_DIR.glob("*.tiktoken.xz"))
    assert total < 2_500_000
    assert (TOKENIZER_DIR / "LICENSE-tiktoken").is_file()


def test_corrupt_file_is_refused_and_counting_degrades(tmp_path: Path) -> None:
    shutil.copy(TOKENIZER_DIR / "o200k_base.tiktoken.xz", tmp_path)
    (tmp_path / "cl100k_base.tiktoken.xz").write_bytes(lzma.compress(b"IQ== 0\n"))
    counter = TokenCounter(tmp_path)
    with pytest.raises(TokenizerLoadError, match="corrupt: sha256"):
        counter.encoding("cl100k_base")
    result = counter.count("gpt-4", prompt="12345678")
    assert result == TokenCount(2, "approximate (characters/4)", "gpt-4")
    assert counter.count("gpt-4o", prompt="hello world").tokenizer_type == "openai_tokenizer"


def test_missing_files_degrade_to_characters(tmp_path: Path) -> None:
    counter = TokenCounter(tmp_path)
    result = counter.count("mistral/mistral-large-latest", prompt="abcdefghij")
    assert result == TokenCount(3, "approximate (characters/4)", "mistral-large-latest")
    with pytest.raises(TokenizerLoadError, match="cannot be read"):
        counter.encoding("o200k_base")


def test_no_file_io_per_count(counter: TokenCounter, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("file I/O on the count path")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(Path, "read_bytes", refuse)
    assert counter.count("gpt-4o", messages=COOKBOOK_MESSAGES).total_tokens == 124
    assert counter.count("claude-3-opus", prompt="hello world").total_tokens == 2


def test_encodings_load_once(counter: TokenCounter) -> None:
    assert counter.encoding("o200k_base") is counter.encoding("o200k_base")
    assert counter.encoding("o200k_harmony") is counter.encoding("o200k_base")


# -- message shapes ------------------------------------------------------------------------------


def test_content_parts_count_like_a_string(counter: TokenCounter) -> None:
    as_string = [{"role": "user", "content": "hello world, how are you"}]
    as_parts = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hello world,"},
                {"type": "text", "text": " how are you"},
            ],
        }
    ]
    assert counter.count("gpt-4o", messages=as_parts) == counter.count("gpt-4o", messages=as_string)


def test_image_parts(counter: TokenCounter) -> None:
    def with_image(detail: str | None) -> list[dict[str, Any]]:
        image: dict[str, Any] = {"url": "https://example.com/cat.png"}
        if detail:
            image["detail"] = detail
        return [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": image},
                ],
            }
        ]

    text_only = counter.count("gpt-4o", messages=[{"role": "user", "content": "hi"}]).total_tokens
    low = counter.count("gpt-4o", messages=with_image("low")).total_tokens
    unknown = counter.count("gpt-4o", messages=with_image(None)).total_tokens
    assert low == text_only + LOW_DETAIL_IMAGE_TOKENS
    assert unknown == text_only + DEFAULT_IMAGE_TOKENS


def test_tool_calls_and_tool_results(counter: TokenCounter) -> None:
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_current_weather", "arguments": '{"location": "Paris"}'},
            }
        ],
    }
    enc = counter.encoding("o200k_base")
    expected = (
        3
        + 1
        + len(enc.encode("get_current_weather"))
        + len(enc.encode('{"location": "Paris"}'))
        + 3
    )  # message, role "assistant", name, arguments, reply priming
    assert counter.count("gpt-4o", messages=[call]).total_tokens == expected
    result = {"role": "tool", "tool_call_id": "call_1", "content": "22C"}
    both = counter.count("gpt-4o", messages=[call, result]).total_tokens
    assert both == expected + 3 + 1 + len(enc.encode("call_1")) + len(enc.encode("22C"))


def test_special_token_text_is_ordinary_text(counter: TokenCounter) -> None:
    result = counter.count("gpt-4", prompt="<|endoftext|>")
    assert result.total_tokens == len(
        counter.encoding("cl100k_base").encode_ordinary("<|endoftext|>")
    )
    assert result.total_tokens > 1


def test_prompt_shapes(counter: TokenCounter) -> None:
    assert (
        counter.count("gpt-3.5-turbo-instruct", prompt=["hello world", "hello"]).total_tokens == 3
    )
    assert counter.count("gpt-3.5-turbo-instruct", prompt=[15339, 1917]).total_tokens == 2
    assert counter.count("gpt-3.5-turbo-instruct", prompt=[[15339], [1917, 1]]).total_tokens == 3
    assert counter.count("gpt-4o").total_tokens == 0


# -- approximation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    ["claude-3-5-sonnet-20240620", "anthropic/claude-3-haiku", "ollama/llama3", "text-davinci-003"],
)
def test_other_models_are_approximated_with_cl100k(counter: TokenCounter, model: str) -> None:
    result = counter.count(model, messages=COOKBOOK_MESSAGES)
    assert result.tokenizer_type == "approximate (cl100k_base)"
    assert result.total_tokens == 129  # cl100k_base with the same message overheads


# -- custom Hugging Face tokenizers ---------------------------------------------------------------


@pytest.fixture
def tokenizer_dir(tmp_path: Path) -> Path:
    """A tiny word-level tokenizer trained here, saved as tokenizer.json."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[UNK]"])
    tokenizer.train_from_iterator(
        ["the quick brown fox", "jumps over the lazy dog", "hello world"], trainer=trainer
    )
    # Truncation saved in the file must not cap counts.
    tokenizer.enable_truncation(max_length=2)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    return tmp_path


def test_custom_tokenizer_from_local_directory(counter: TokenCounter, tokenizer_dir: Path) -> None:
    spec = {"identifier": str(tokenizer_dir), "revision": "main", "auth_token": None}
    result = counter.count(
        "deepseek/deepseek-chat", prompt="the quick brown fox", custom_tokenizer=spec
    )
    assert result == TokenCount(4, "huggingface_tokenizer", "deepseek-chat")
    unknown = counter.count("m", prompt="the purple fox", custom_tokenizer=spec)
    assert unknown.total_tokens == 3  # "purple" is one [UNK]


def test_custom_tokenizer_from_file_path_and_messages(
    counter: TokenCounter, tokenizer_dir: Path
) -> None:
    spec = {"identifier": str(tokenizer_dir / "tokenizer.json")}
    messages = [{"role": "user", "content": "hello world"}]
    result = counter.count("gpt-4o", messages=messages, custom_tokenizer=spec)
    # 3 per message + "user" ([UNK], 1) + "hello world" (2) + 3 reply priming.
    assert result == TokenCount(9, "huggingface_tokenizer", "gpt-4o")


def test_custom_tokenizer_is_cached(counter: TokenCounter, tokenizer_dir: Path) -> None:
    spec = {"identifier": str(tokenizer_dir), "revision": "main"}
    first = counter.load_tokenizer(spec)
    (tokenizer_dir / "tokenizer.json").unlink()  # a cached tokenizer needs no file
    assert counter.load_tokenizer(spec) is first
    assert counter.count("m", prompt="hello", custom_tokenizer=spec).total_tokens == 1


def test_custom_tokenizer_missing_local_path(counter: TokenCounter, tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "tokenizer.json"
    with pytest.raises(TokenizerLoadError, match="could not be loaded from") as info:
        counter.count("m", prompt="x", custom_tokenizer={"identifier": str(missing)})
    assert info.value.identifier == str(missing)


def test_hub_tokenizer_unreachable_raises_clear_error(
    no_network: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = TokenCounter()
    spec = {
        "identifier": "llmrelay-tests/no-such-tokenizer",
        "revision": "main",
        "auth_token": "hf_secret_token",
    }
    with pytest.raises(TokenizerLoadError) as info:
        counter.count("deepseek/deepseek-chat", prompt="hi", custom_tokenizer=spec)
    message = str(info.value)
    assert "'llmrelay-tests/no-such-tokenizer'" in message
    assert "could not be fetched" in message
    assert "hf_secret_token" not in message
    assert info.value.status == 503
    assert info.value.body()["error"]["code"] == "tokenizer_unavailable"


def test_hub_failure_is_not_retried_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str, str | None]] = []

    def unreachable(identifier: str, revision: str, token: str | None) -> str:
        calls.append((identifier, revision, token))
        raise OSError("connection refused")

    monkeypatch.setattr(tokens_module, "download_tokenizer_json", unreachable)
    counter = TokenCounter(hub_retry_after=60.0)
    spec = {"identifier": "org/model", "revision": "v1", "auth_token": "tok"}
    for _ in range(3):
        with pytest.raises(TokenizerLoadError, match="could not be fetched"):
            counter.load_tokenizer(spec)
    assert calls == [("org/model", "v1", "tok")]

    retrying = TokenCounter(hub_retry_after=0.0)
    for _ in range(2):
        with pytest.raises(TokenizerLoadError):
            retrying.load_tokenizer(spec)
    assert len(calls) == 3


def test_custom_tokenizer_needs_an_identifier(counter: TokenCounter) -> None:
    with pytest.raises(TokenizerLoadError, match="identifier"):
        counter.count("m", prompt="x", custom_tokenizer={"revision": "main"})


def test_hub_tokenizer_is_fetched_when_reachable(
    monkeypatch: pytest.MonkeyPatch, tokenizer_dir: Path
) -> None:
    """A local server in the hub's URL layout stands in for the Hub (HF_ENDPOINT)."""
    import http.server
    import threading

    tokenizer_json = (tokenizer_dir / "tokenizer.json").read_text()
    seen: list[tuple[str, str | None]] = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            if self.path == "/org/tiny/resolve/v2/tokenizer.json":
                body = tokenizer_json.encode()
                self.send_response(200)
            else:
                body = b"not found"
                self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        counter = TokenCounter()
        spec = {"identifier": "org/tiny", "revision": "v2", "auth_token": "hf_tok"}
        counted = counter.count("m", prompt="hello world", custom_tokenizer=spec)
        assert counted.tokenizer_type == "huggingface_tokenizer" and counted.total_tokens > 0
        assert seen == [("/org/tiny/resolve/v2/tokenizer.json", "Bearer hf_tok")]
        counter.count("m", prompt="again", custom_tokenizer=spec)
        assert len(seen) == 1  # loaded once, then cached
        with pytest.raises(TokenizerLoadError, match="404"):
            counter.load_tokenizer({"identifier": "org/missing", "revision": "main"})
    finally:
        server.shutdown()
