"""Exporters that send standard log records over HTTP, or hand them to the operator's own code.

Each exporter owns a BatchQueue (proxy/observe/queue.py): ``export`` only enqueues; the
queue's greenlet builds the payload and sends it. Settings come from LiteLLM's environment
variables, read once at boot; a missing required one fails the boot naming it.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import gevent
import orjson

from proxy.observe.queue import BatchQueue
from proxy.observe.record import REDACTED
from proxy.providers.base import UpstreamCall
from proxy.transport import Transport

log = logging.getLogger(__name__)

#: records an exporter's queue holds before it drops new ones
MAX_QUEUE = 10_000

#: (connect, read) seconds for one POST to a receiver.
HTTP_TIMEOUT = (5.0, 10.0)
EMPTY: dict[str, Any] = {}
SCALARS = frozenset({str, int, float, bool})


class SettingMissing(Exception):
    """A required environment variable is not set; the message names it."""


#: seconds a background greenlet steps aside between two slices of its work
PAUSE = 0.0001


def step_aside() -> None:
    """Let requests run before the next slice of background work.

    Not ``gevent.sleep(0)``: that only queues a callback, and the hub runs queued callbacks for
    up to the interpreter's switch interval (5 ms) before it polls the sockets again, so a call
    whose answer had arrived waited for several slices (measured: p99 at one connection 2.4 ms
    without exporters, 7-8 ms with them). Waiting on a timer makes the hub poll first.
    """
    gevent.sleep(PAUSE)


def slices(batch: list[Any], pause: Callable[[], Any] | None, size: int, *, first: bool = False) -> Iterator[list[Any]]:
    """``batch`` in slices of ``size`` items, calling ``pause`` (``step_aside``) between two, and
    before the first one too if ``first``."""
    for start in range(0, len(batch), size):
        if pause is not None and (start or first):
            pause()
        yield batch[start:start + size]


class Exporter:
    """Base: a named sink with a bounded queue; subclasses implement ``send(batch)``.

    ``encode`` turns a record into what the queue holds, in the observer's batch loop (off the
    request path, within CALLS_INTERVAL of the call's end): the receiver's own bytes for the HTTP
    exporters. A queue of bytes holds one compact
    object per call, where a queue of records kept each call's parsed request and answer alive
    until its batch went out, a working set that made every request in the worker slower.
    ``send`` then only joins a batch and posts it.
    """

    name = ""
    batch_size = 100
    interval = 1.0

    def __init__(self, on_drop: Callable[[str, int], None] | None = None, max_queue: int = MAX_QUEUE) -> None:
        self.queue = BatchQueue(self.name, self.send, max_size=max_queue, batch_size=self.batch_size,
                                interval=self.interval, on_drop=on_drop)

    def encode(self, record: dict[str, Any]) -> Any:
        """What the queue holds for ``record`` (the record itself unless a subclass says so)."""
        return record

    def export(self, record: dict[str, Any]) -> None:
        self.queue.put(self.encode(record))

    def send(self, batch: list[Any]) -> None:
        """Deliver a batch of what ``encode`` made."""
        raise NotImplementedError

    def close(self, timeout: float = 5.0) -> None:
        self.queue.close(timeout)


def env(environ: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = environ.get(name)
    return value if value else default


def parse_headers(raw: str | None) -> dict[str, str]:
    """``GENERIC_LOGGER_HEADERS``: ``k1=v1,k2=v2`` as LiteLLM reads it (JSON objects accepted too)."""
    if not raw:
        return {}
    raw = raw.strip()
    if raw.startswith("{"):
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    out: dict[str, str] = {}
    for part in raw.split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            out[key.strip()] = value.strip()
    return out


class HTTPExporter(Exporter):
    """An exporter that POSTs each batch, over the proxy's own keep-alive HTTP client."""

    def __init__(self, on_drop: Callable[[str, int], None] | None = None, max_queue: int = MAX_QUEUE) -> None:
        self.transport = Transport(pool_size=4, connect_timeout=HTTP_TIMEOUT[0])
        super().__init__(on_drop, max_queue)

    def post(self, url: str, payload: Any, headers: dict[str, str]) -> None:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload, default=str)
        call = UpstreamCall("POST", url, {"Content-Type": "application/json", **headers}, data)
        resp = self.transport.send(call, timeout=HTTP_TIMEOUT[1])
        if resp.status >= 400:
            raise RuntimeError(f"{url} answered {resp.status}: {resp.body[:200].decode(errors='replace')}")

    def close(self, timeout: float = 5.0) -> None:
        super().close(timeout)
        self.transport.close()


class GenericAPI(HTTPExporter):
    """``generic_api``: a JSON array of records POSTed to ``GENERIC_LOGGER_ENDPOINT``."""

    name = "generic_api"
    url_env = "GENERIC_LOGGER_ENDPOINT"
    headers_env = "GENERIC_LOGGER_HEADERS"

    def __init__(self, environ: Mapping[str, str], on_drop: Callable[[str, int], None] | None = None) -> None:
        self.url = self.settings(environ)
        self.headers = parse_headers(env(environ, self.headers_env))
        super().__init__(on_drop)

    @classmethod
    def settings(cls, environ: Mapping[str, str]) -> str:
        url = env(environ, cls.url_env)
        if not url:
            raise SettingMissing(f"{cls.name} needs the environment variable {cls.url_env} (the receiver's URL)")
        return url

    def encode(self, record: dict[str, Any]) -> bytes:
        return orjson.dumps(record, default=str)

    def send(self, batch: list[bytes]) -> None:
        self.post(self.url, b"".join((b"[", b",".join(batch), b"]")), self.headers)


class Webhook(GenericAPI):
    """``webhook``: the same JSON POST, to ``WEBHOOK_URL`` with ``WEBHOOK_HEADERS``."""

    name = "webhook"
    url_env = "WEBHOOK_URL"
    headers_env = "WEBHOOK_HEADERS"


#: ``.000Z`` ... ``.999Z``: the milliseconds and zone of a timestamp, formatted once
MILLISECONDS = tuple(f".{ms:03d}Z" for ms in range(1000))


class Timestamps:
    """Epoch seconds -> ISO 8601 in UTC with milliseconds (``2026-01-02T03:04:05.678Z``), as
    Langfuse's API reads them. The date and time of day are formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def format(self, ts: float) -> str:
        second = int(ts)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return self._prefix + MILLISECONDS[int((ts - second) * 1000)]


#: request parameters that LiteLLM logs with the input, not as model parameters
INPUT_PARAMETERS = ("tools", "functions")


def split_parameters(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Model parameters as Langfuse takes them (str, int, float, bool: anything else as its
    string, as LiteLLM sends it), and the ``tools``/``functions`` that go with the input."""
    tools = None
    if "tools" in params or "functions" in params:
        tools = {k: params[k] for k in INPUT_PARAMETERS if params.get(k) is not None}
        params = {k: v for k, v in params.items() if k not in INPUT_PARAMETERS}
    scalars = {k: v if v.__class__ in SCALARS else str(v) for k, v in params.items() if v is not None}
    return scalars, tools


def answer_of(call_type: str, response: Any) -> Any:
    """What LiteLLM logs as a call's output: the first choice's message of a chat completion, the
    first choice's text of a text completion, nothing for embeddings."""
    if response.__class__ is not dict or call_type == "embedding":
        return response if response.__class__ is str else None  # the redaction placeholder
    choices = response.get("choices")
    if not choices or choices[0].__class__ is not dict:
        return None
    return choices[0].get("text") if call_type == "text_completion" else choices[0].get("message")


#: a generation's name when neither the request nor the key names it
CALL_NAMES = {call_type: "litellm-" + call_type for call_type in ("completion", "text_completion", "embedding",
                                                                   "moderation")}
#: request metadata that names the trace and generation, not copied into their metadata
TRACE_FIELDS = frozenset({"generation_name", "generation_id", "trace_id", "trace_user_id", "session_id", "tags",
                          "trace_name"})


#: what closes an ingestion request after its events
BATCH_TAIL = b'],"metadata":' + orjson.dumps({"sdk_name": "llmrelay", "public_key": None}) + b"}"


class Langfuse(HTTPExporter):
    """``langfuse``: a trace and a generation per call, batched to ``POST /api/public/ingestion``."""

    name = "langfuse"
    batch_size = 250

    def __init__(self, environ: Mapping[str, str], on_drop: Callable[[str, int], None] | None = None) -> None:
        public, secret, host = self.settings(environ)
        self.url = host.rstrip("/") + "/api/public/ingestion"
        token = base64.b64encode(f"{public}:{secret}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}"}
        self.release = env(environ, "LANGFUSE_RELEASE")
        self.iso = Timestamps().format  # a bound method: cheaper to call than ``__call__``
        self._metadata: dict[tuple[Any, ...], dict[str, Any]] = {}
        super().__init__(on_drop)

    @staticmethod
    def settings(environ: Mapping[str, str]) -> tuple[str, str, str]:
        public, secret = env(environ, "LANGFUSE_PUBLIC_KEY"), env(environ, "LANGFUSE_SECRET_KEY")
        if not public or not secret:
            raise SettingMissing("langfuse needs the environment variables LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY")
        host = env(environ, "LANGFUSE_HOST") or env(environ, "LANGFUSE_BASE_URL") or "https://cloud.langfuse.com"
        if not host.startswith(("http://", "https://")):
            host = "http://" + host
        return public, secret, host

    def events(self, record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The call's ``trace-create`` and ``generation-create`` events, shaped as LiteLLM's
        Langfuse logger shapes them: input ``{"messages": ...}`` (with the request's ``tools`` or
        ``functions``), output the answer's first message (a completion's text; none for
        embeddings), a failure's error as the output and status message of an ERROR generation.

        Event ids derive from the call's id, so a batch sent twice is taken once.
        """
        meta = record["metadata"]
        requester = meta.get("requester_metadata")
        call_type = record["call_type"]
        name = meta.get("generation_name")
        alias = meta.get("user_api_key_alias")
        default_name = CALL_NAMES.get(call_type) or "litellm-" + call_type
        name = str(name) if name else f"litellm:{alias}" if alias else default_name
        iso = self.iso
        started, ended = iso(record["startTime"]), iso(record["endTime"])
        first = record["completionStartTime"]
        trace_id, call_id = record["trace_id"], record["id"]
        extra_meta = {k: v for k, v in requester.items() if k not in TRACE_FIELDS} if requester else {}
        trace_name = requester.get("trace_name") if requester else None
        params = record["model_parameters"]
        model_parameters, tools = split_parameters(params) if params else (EMPTY, None)
        messages = record["messages"]
        prompt: Any = messages  # the redaction placeholder stays as it is
        if messages is not REDACTED:
            prompt = {"messages": messages, **tools} if tools else {"messages": messages}
        failed = record["status"] == "failure"
        if failed:
            output = record["error_str"] or f"status {record['status_code']}"
        else:
            output = answer_of(call_type, record["response"])
        trace: dict[str, Any] = {
            "id": trace_id, "timestamp": started, "name": str(trace_name) if trace_name else default_name,
            "userId": meta.get("trace_user_id") or record["end_user"], "sessionId": meta.get("session_id"),
            "input": prompt, "tags": record["request_tags"], "metadata": extra_meta,
        }
        if not failed:  # a trace has no status message: the failure shows on its generation
            trace["output"] = output
        if self.release:
            trace["release"] = self.release
        prompt_tokens, completion, total = record["prompt_tokens"], record["completion_tokens"], record["total_tokens"]
        cost = record["response_cost"]
        usage = {"input": prompt_tokens, "output": completion, "total": total, "unit": "TOKENS"}
        generation_id = meta.get("generation_id")
        generation: dict[str, Any] = {
            "id": str(generation_id) if generation_id else call_id, "traceId": trace_id, "name": name,
            "startTime": started, "endTime": ended,
            "completionStartTime": ended if first == record["endTime"] else iso(first),
            "model": record["model"], "modelParameters": model_parameters,
            "input": prompt, "output": output, "usage": usage,
            "usageDetails": {"input": prompt_tokens, "output": completion, "total": total},
            "metadata": self.generation_metadata(record, meta, call_id, extra_meta),
            "level": "DEFAULT",
        }
        if cost is not None:
            usage["totalCost"] = cost
            generation["costDetails"] = {"total": cost}
        if failed:
            generation["level"] = "ERROR"
            generation["statusMessage"] = output
        return ({"id": call_id + "-trace", "type": "trace-create", "timestamp": ended, "body": trace},
                {"id": call_id + "-generation", "type": "generation-create", "timestamp": ended,
                 "body": generation})

    def generation_metadata(self, record: dict[str, Any], meta: dict[str, Any], call_id: str,
                            extra: dict[str, Any]) -> dict[str, Any]:
        """The generation's metadata: the deployment's and key's (made once, copied), the call's
        id and the request's own metadata."""
        found = self.deployment_metadata(record, meta).copy()
        found["litellm_call_id"] = call_id
        if extra:
            found.update(extra)
        return found

    def deployment_metadata(self, record: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        """The generation's metadata that repeats for a deployment and key: made once."""
        key = (record["model_id"], record["model_group"], meta.get("user_api_key_alias"),
               meta.get("user_api_key_team_id"), meta.get("user_api_key_user_id"))
        found = self._metadata.get(key)
        if found is None:
            found = {"model_group": record["model_group"], "model_id": record["model_id"],
                     "custom_llm_provider": record["custom_llm_provider"], "user_api_key_alias": key[2],
                     "user_api_key_team_id": key[3], "user_api_key_user_id": key[4]}
            if len(self._metadata) >= 4096:
                self._metadata.clear()
            self._metadata[key] = found
        return found

    def encode(self, record: dict[str, Any]) -> bytes:
        """The call's two events as JSON, comma separated: an element run of the ingestion batch."""
        return orjson.dumps(self.events(record), default=str)[1:-1]

    def payload(self, records: list[dict[str, Any]]) -> bytes:
        """The ingestion request of ``records``."""
        return self.body([self.encode(r) for r in records])

    @staticmethod
    def body(batch: list[bytes]) -> bytes:
        """The ingestion request. Joined, not concatenated: a batch is hundreds of kilobytes, and
        each ``+`` would copy all of it again."""
        return b"".join((b'{"batch":[', b",".join(batch), BATCH_TAIL))

    def send(self, batch: list[bytes]) -> None:
        self.post(self.url, self.body(batch), self.headers)


class Custom(Exporter):
    """``litellm_settings.callbacks: ["module.attribute"]``: the operator's object, called with
    LiteLLM's CustomLogger hook names ``log_success_event`` / ``log_failure_event`` (a plain
    function is called for successes), off the request path."""

    batch_size = 50
    interval = 0.2

    def __init__(self, spec: str, target: Any, on_drop: Callable[[str, int], None] | None = None) -> None:
        self.name = f"custom:{spec}"
        self.target = target
        self.on_success = getattr(target, "log_success_event", None)
        self.on_failure = getattr(target, "log_failure_event", None)
        if self.on_success is None and self.on_failure is None and callable(target):
            self.on_success = target
        super().__init__(on_drop)

    def send(self, batch: list[dict[str, Any]]) -> None:
        for record in batch:
            hook = self.on_failure if record["status"] == "failure" else self.on_success
            if hook is None:
                continue
            kwargs = {**record, "standard_logging_object": record, "litellm_call_id": record["id"]}
            start = dt.datetime.fromtimestamp(record["startTime"])
            end = dt.datetime.fromtimestamp(record["endTime"])
            try:
                hook(kwargs, record["response"], start, end)
            except Exception:
                log.exception("custom callback %s failed for %s", self.name, record["id"])


def load_custom(spec: str, folder: str) -> Any:
    """``module.attribute`` with the config's folder first on sys.path; LookupError says what is missing."""
    import importlib
    import sys

    module_name, _, attribute = spec.rpartition(".")
    if not module_name or not attribute:
        raise LookupError(f"custom callback {spec!r} must be written module.attribute")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise LookupError(f"custom callback {spec!r}: no module {exc.name!r} (looked in {folder} and the "
                          "import path)") from None
    except Exception as exc:
        raise LookupError(f"custom callback {spec!r}: importing {module_name!r} failed: {exc}") from None
    if not hasattr(module, attribute):
        raise LookupError(f"custom callback {spec!r}: module {module_name!r} has no attribute {attribute!r}")
    return getattr(module, attribute)
