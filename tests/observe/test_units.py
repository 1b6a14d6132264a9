"""The log record, the bounded queue, the Langfuse payload and boot-time checks of callback names."""

from __future__ import annotations

import base64
from pathlib import Path

import gevent
import gevent.event
import pytest

from proxy.config import load_config
from proxy.context import RequestContext
from proxy.errors import ConfigError, ServiceUnavailable
from proxy.gateway import Gateway
from proxy.observe.exporters import Langfuse
from proxy.observe.queue import BatchQueue
from proxy.observe.record import REDACTED, build_record


def make_ctx(**body) -> RequestContext:
    ctx = RequestContext("chat", {"model": "gpt", "messages": [{"role": "user", "content": "hi"}],
                                  "temperature": 0.3, **body})
    ctx.metadata = {"generation_name": "gen-a", "trace_id": "trace-1", "trace_user_id": "u-9",
                    "session_id": "s-1", "tags": ["t1"], "team": "x"}
    ctx.usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    ctx.response = {"id": "chatcmpl-1", "choices": [{"message": {"role": "assistant", "content": "yo"},
                                                     "finish_reason": "stop"}]}
    ctx.caller = {"token": "h4sh", "key_alias": "alias-1", "team_id": "team-1", "user_id": "user-1"}
    ctx.timings = {"callbacks": 0.001, "upstream": 0.02}
    return ctx


def test_record_carries_call_key_usage_and_metadata() -> None:
    record = build_record(make_ctx(), cost=0.25)
    assert record["trace_id"] == "trace-1"
    assert record["status"] == "success" and record["status_code"] == 200
    assert (record["prompt_tokens"], record["completion_tokens"], record["total_tokens"]) == (3, 5, 8)
    assert record["response_cost"] == 0.25
    assert record["messages"] == [{"role": "user", "content": "hi"}]
    assert record["response"]["choices"][0]["message"]["content"] == "yo"
    assert record["model_parameters"] == {"temperature": 0.3}
    meta = record["metadata"]
    assert (meta["user_api_key_alias"], meta["user_api_key_team_id"], meta["user_api_key_user_id"]) == \
        ("alias-1", "team-1", "user-1")
    assert meta["generation_name"] == "gen-a" and meta["session_id"] == "s-1"
    assert record["request_tags"] == ["t1"]
    assert record["upstream_latency"] == 0.02
    assert record["endTime"] >= record["startTime"]


def test_record_failure_and_redaction() -> None:
    ctx = make_ctx()
    ctx.error, ctx.status, ctx.response = ServiceUnavailable("upstream down"), 503, None
    record = build_record(ctx, redact=True)
    assert record["status"] == "failure"
    assert record["error_information"]["error_code"] == "503"
    assert "upstream down" in record["error_str"]
    assert record["messages"] == REDACTED and record["response"] == REDACTED


def test_record_honours_a_redact_messages_flag_on_the_context() -> None:
    ctx = RequestContext("chat", {"model": "gpt", "messages": [{"role": "user", "content": "secret"}]})
    ctx.redact_messages = True  # what x-litellm-enable-message-redaction sets
    record = build_record(ctx)
    assert record["messages"] == REDACTED
    assert "secret" not in str(record)


def test_queue_drops_when_full_counts_and_flushes_on_close() -> None:
    sent: list[list[int]] = []
    drops: list[tuple[str, int]] = []
    gate = gevent.event.Event()

    def send(batch: list[int]) -> None:
        gate.wait()  # a receiver that does not answer yet
        sent.append(batch)

    queue = BatchQueue("test", send, max_size=5, batch_size=2, interval=0.01,
                       on_drop=lambda name, n: drops.append((name, n)))
    accepted = [queue.put(i) for i in range(8)]
    gevent.sleep(0.05)  # the greenlet takes one batch and blocks on the receiver
    more = [queue.put(i) for i in range(8, 12)]
    assert accepted[:5] == [True] * 5 and accepted[5:] == [False] * 3
    assert queue.dropped == 3 + more.count(False)
    assert sum(n for _, n in drops) == queue.dropped and drops[0][0] == "test"
    gate.set()
    queue.close(timeout=2)
    delivered = [i for batch in sent for i in batch]
    assert delivered == [i for i, ok in enumerate(accepted + more) if ok]
    assert all(len(b) <= 2 for b in sent)


def test_queue_counts_failed_sends_and_never_raises() -> None:
    def send(batch: list[int]) -> None:
        raise ConnectionError("receiver down")

    queue = BatchQueue("down", send, batch_size=10, interval=0.01)
    for i in range(3):
        assert queue.put(i)
    queue.close(timeout=1)
    assert queue.failed == 3 and queue.sent == 0


def test_queue_put_many_takes_what_fits_and_drops_the_rest() -> None:
    sent: list[int] = []
    drops: list[int] = []
    queue = BatchQueue("many", sent.extend, max_size=4, batch_size=100, interval=5,
                       on_drop=lambda name, n: drops.append(n))
    queue.put(0)
    queue.put_many([1, 2, 3, 4, 5])
    assert len(queue) == 4 and queue.dropped == 2 and drops == [2]
    queue.close(timeout=1)
    assert sent == [0, 1, 2, 3]
    queue.put_many([6])  # closed: nothing is taken
    assert queue.dropped == 3 and sent == [0, 1, 2, 3]


def test_publishing_lets_a_waiting_request_run_between_steps() -> None:
    """A call whose answer has arrived runs after the step of exporter work in progress (the
    records, an exporter's encoding), not after the whole batch (``gevent.sleep(0)`` would keep
    the hub off the sockets)."""
    import gevent.socket

    from proxy.observe import Telemetry
    from proxy.observe.hub import Observer, Wanted

    environ = {"LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk", "LANGFUSE_HOST": "http://127.0.0.1:1",
               "GENERIC_LOGGER_ENDPOINT": "http://127.0.0.1:1/log"}
    wanted = {name: Wanted(name, f"litellm_settings.callbacks[{i}]", success=True, failure=True)
              for i, name in enumerate(("langfuse", "generic_api"))}
    observer = Observer(wanted, {}, Telemetry(), environ=environ)
    order: list[object] = []
    for exporter in observer.exporters:
        encode = exporter.encode
        exporter.encode = (lambda record, name=exporter.name, encode=encode:  # type: ignore[method-assign]
                           order.append(name) or encode(record))
    ours, theirs = gevent.socket.socketpair()

    def request() -> None:
        ours.recv(1)
        order.append("request")

    try:
        for _ in range(3):
            observer.finish(make_ctx(), 0.1)
        waiting = gevent.spawn(request)
        gevent.sleep(0.01)  # the request now waits on its socket
        theirs.send(b"x")  # its answer arrives
        observer.publish([observer.calls._items.popleft() for _ in range(3)])
        waiting.join(1)
    finally:
        observer.close(0)
        ours.close()
        theirs.close()
    assert order == ["request", *["langfuse"] * 3, *["generic_api"] * 3]


def test_publishing_steps_aside_between_slices_of_each_step(monkeypatch) -> None:
    """A batch larger than a slice yields to the hub within each step too: building the records,
    and each exporter's encoding (before its first slice and between two)."""
    import proxy.observe.hub as hub
    from proxy.observe import Telemetry

    environ = {"LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk", "LANGFUSE_HOST": "http://127.0.0.1:1",
               "GENERIC_LOGGER_ENDPOINT": "http://127.0.0.1:1/log"}
    wanted = {name: hub.Wanted(name, f"litellm_settings.callbacks[{i}]", success=True, failure=True)
              for i, name in enumerate(("langfuse", "generic_api"))}
    observer = hub.Observer(wanted, {}, Telemetry(), environ=environ)
    pauses: list[int] = []
    monkeypatch.setattr(hub, "PUBLISH_SLICE", 2)
    monkeypatch.setattr(hub, "step_aside", lambda: pauses.append(1))
    try:
        for _ in range(5):
            observer.finish(make_ctx(), 0.1)
        observer.publish([observer.calls._items.popleft() for _ in range(5)])
        queued = [len(exporter.queue) for exporter in observer.exporters]
    finally:
        observer.close(0)
    assert queued == [5, 5]
    assert len(pauses) == 2 + 3 + 3  # records: 3 slices; each exporter: before each of its 3 slices


def test_otel_batching_follows_the_sdk_settings(caplog) -> None:
    from proxy.observe.otel import OTel

    tuned = OTel({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "64", "OTEL_BSP_SCHEDULE_DELAY": "250",
                  "OTEL_BSP_MAX_QUEUE_SIZE": "300"})
    defaults = OTel({"OTEL_BSP_SCHEDULE_DELAY": "soon", "OTEL_BSP_MAX_QUEUE_SIZE": "-1"})
    try:
        assert (tuned.queue.batch_size, tuned.queue.interval, tuned.queue.max_size) == (64, 0.25, 300)
        assert (defaults.queue.batch_size, defaults.queue.interval, defaults.queue.max_size) == (512, 1.0, 10_000)
        assert "OTEL_BSP_SCHEDULE_DELAY='soon' is not a positive integer" in caplog.text
        assert "OTEL_BSP_MAX_QUEUE_SIZE='-1'" in caplog.text
    finally:
        tuned.close(timeout=1)
        defaults.close(timeout=1)


def langfuse_events(exporter: Langfuse, record: dict) -> list[dict]:
    import orjson

    return orjson.loads(b"[" + exporter.encode(record) + b"]")


def test_langfuse_payload_shape() -> None:
    exporter = Langfuse({"LANGFUSE_PUBLIC_KEY": "pk-lf", "LANGFUSE_SECRET_KEY": "sk-lf",
                         "LANGFUSE_HOST": "http://127.0.0.1:1"})
    try:
        assert exporter.url == "http://127.0.0.1:1/api/public/ingestion"
        assert exporter.headers["Authorization"] == "Basic " + base64.b64encode(b"pk-lf:sk-lf").decode()
        trace, generation = langfuse_events(exporter, build_record(make_ctx(), cost=0.5))
    finally:
        exporter.close(0)
    assert trace["type"] == "trace-create" and generation["type"] == "generation-create"
    assert trace["id"] != generation["id"]  # event ids are unique envelopes
    assert trace["body"]["id"] == "trace-1" and trace["body"]["userId"] == "u-9"
    assert trace["body"]["sessionId"] == "s-1" and trace["body"]["tags"] == ["t1"]
    assert trace["body"]["metadata"] == {"team": "x"}  # request metadata that names no trace field
    body = generation["body"]
    assert body["traceId"] == "trace-1" and body["name"] == "gen-a"
    assert body["usage"] == {"input": 3, "output": 5, "total": 8, "unit": "TOKENS", "totalCost": 0.5}
    assert body["usageDetails"] == {"input": 3, "output": 5, "total": 8}
    assert body["costDetails"] == {"total": 0.5}
    assert body["level"] == "DEFAULT" and body["startTime"].endswith("Z")
    assert body["modelParameters"] == {"temperature": 0.3}
    assert body["metadata"]["user_api_key_alias"] == "alias-1" and body["metadata"]["team"] == "x"
    assert body["metadata"]["litellm_call_id"] == trace["id"].removesuffix("-trace")
    # as LiteLLM's Langfuse logger: the messages under "messages", the answer's first message
    assert body["input"] == trace["body"]["input"] == {"messages": [{"role": "user", "content": "hi"}]}
    assert body["output"] == trace["body"]["output"] == {"role": "assistant", "content": "yo"}
    assert trace["body"]["name"] == "litellm-completion"  # the trace is named by trace_name only


def test_langfuse_input_output_and_names_follow_litellm() -> None:
    """Tools go with the input, other non-scalar parameters are sent as strings, a text completion's
    output is its text, an embedding has none, and an unnamed generation takes the key's alias."""
    exporter = Langfuse({"LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk", "LANGFUSE_HOST": "http://127.0.0.1:1"})
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    chat = make_ctx(tools=tools, stop=["\n"], seed=None)
    chat.metadata = {}
    completion = RequestContext("completion", {"model": "gpt", "prompt": "say", "max_tokens": 4})
    completion.response = {"id": "cmpl-1", "choices": [{"text": "said", "index": 0, "finish_reason": "stop"}]}
    embedding = RequestContext("embedding", {"model": "emb", "input": ["a", "b"]})
    embedding.response = {"object": "list", "data": [{"embedding": [0.1], "index": 0}]}
    redacted = make_ctx()
    redacted.redact_messages = True
    try:
        (trace, generation), (_, text), (_, vectors), (_, hidden) = (
            langfuse_events(exporter, build_record(ctx)) for ctx in (chat, completion, embedding, redacted))
    finally:
        exporter.close(0)
    assert generation["body"]["input"] == {"messages": [{"role": "user", "content": "hi"}], "tools": tools}
    assert generation["body"]["modelParameters"] == {"temperature": 0.3, "stop": "['\\n']"}
    assert generation["body"]["name"] == "litellm:alias-1" and trace["body"]["name"] == "litellm-completion"
    assert text["body"]["input"] == {"messages": "say"} and text["body"]["output"] == "said"
    assert text["body"]["name"] == "litellm-text_completion" and text["body"]["modelParameters"] == {"max_tokens": 4}
    assert vectors["body"]["input"] == {"messages": ["a", "b"]} and vectors["body"]["output"] is None
    assert hidden["body"]["input"] == hidden["body"]["output"] == "redacted-by-litellm"


def test_streams_are_logged_with_the_answer_they_streamed() -> None:
    """A stream's record holds the answer assembled from its chunks, shaped by the endpoint: a chat
    completion's message, a text completion's text; Langfuse logs each as LiteLLM does."""
    exporter = Langfuse({"LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk", "LANGFUSE_HOST": "http://127.0.0.1:1"})
    chat = make_ctx(stream=True)
    completion = RequestContext("completion", {"model": "gpt", "prompt": "say", "stream": True})
    for ctx, text in ((chat, "streamed chat"), (completion, "streamed text")):
        ctx.response, ctx.stream = None, True
        ctx.extra["stream_text"] = text
        ctx.usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    try:
        chat_record, completion_record = build_record(chat), build_record(completion)
        (_, chat_generation), (_, text_generation) = (langfuse_events(exporter, r)
                                                      for r in (chat_record, completion_record))
    finally:
        exporter.close(0)
    assert chat_record["response"]["choices"][0]["message"] == {"role": "assistant", "content": "streamed chat"}
    assert completion_record["response"]["object"] == "text_completion"
    assert completion_record["response"]["choices"][0]["text"] == "streamed text"
    assert chat_generation["body"]["output"] == {"role": "assistant", "content": "streamed chat"}
    assert text_generation["body"]["output"] == "streamed text"
    assert text_generation["body"]["usage"]["output"] == 2


def test_langfuse_events_escape_values_and_carry_failures_names_and_release() -> None:
    """Values are written as JSON whatever they hold (quotes, backslashes, non-ASCII); a failed
    call is an ERROR generation; trace_name, generation_id and LANGFUSE_RELEASE are honoured."""
    exporter = Langfuse({"LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk",
                         "LANGFUSE_HOST": "http://127.0.0.1:1", "LANGFUSE_RELEASE": "v\"2"})
    ctx = make_ctx(messages=[{"role": "user", "content": 'say "ünï" \\ now'}])
    ctx.request_id = 'req-"odd"'
    ctx.metadata = {"trace_name": "tr \"x\"", "generation_id": 42, "note": "ü\n", "tags": "not-a-list"}
    ctx.error, ctx.status, ctx.response = ServiceUnavailable('upstream "down"'), 503, None
    try:
        record = build_record(ctx)  # once: two records of one call end a few µs apart
        first = langfuse_events(exporter, record)
        second = langfuse_events(exporter, record)  # the metadata block comes from the cache
    finally:
        exporter.close(0)
    assert first == second
    trace, generation = first
    assert trace["id"] == 'req-"odd"-trace' and generation["id"] == 'req-"odd"-generation'
    assert trace["body"]["name"] == 'tr "x"' and trace["body"]["release"] == 'v"2'
    assert trace["body"]["input"] == {"messages": [{"role": "user", "content": 'say "ünï" \\ now'}]}
    assert "output" not in trace["body"] and trace["body"]["tags"] == []  # the failure shows on the generation
    assert trace["body"]["metadata"] == {"note": "ü\n"}
    body = generation["body"]
    assert body["id"] == "42" and body["name"] == "litellm:alias-1" and body["level"] == "ERROR"
    assert "upstream \"down\"" in body["statusMessage"] and body["output"] == body["statusMessage"]
    assert body["usage"] == {"input": 3, "output": 5, "total": 8, "unit": "TOKENS"} and "costDetails" not in body
    assert body["metadata"]["litellm_call_id"] == 'req-"odd"' and body["metadata"]["note"] == "ü\n"
    assert body["completionStartTime"] == body["endTime"]


def config(tmp_path: Path, settings: dict) -> object:
    return load_config({"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m",
                                                                              "mock_response": "x"}}],
                        "litellm_settings": settings})


def test_unknown_callback_fails_the_boot_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Gateway(config(tmp_path, {"callbacks": ["prometheus", "nosuchlogger"]}), preload=False, store=False,
                shared_state=False, exporters=False)
    assert "litellm_settings.callbacks[1]: unknown callback 'nosuchlogger'" in str(info.value)


def test_custom_callback_missing_module_or_attribute_fails_the_boot(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "obs_handlers_a.py").write_text("handler = object()\n")
    (folder / "config.yaml").write_text(
        "model_list: []\nlitellm_settings:\n  callbacks: [obs_handlers_a.missing, obs_nomodule_b.handler]\n")
    with pytest.raises(ConfigError) as info:
        Gateway(load_config(folder / "config.yaml"), preload=False, store=False, shared_state=False,
                exporters=False)
    text = str(info.value)
    assert "litellm_settings.callbacks[0]: custom callback 'obs_handlers_a.missing'" in text
    assert "no attribute 'missing'" in text
    assert "litellm_settings.callbacks[1]" in text and "no module 'obs_nomodule_b'" in text


def test_exporter_without_its_keys_is_skipped_not_fatal(tmp_path: Path, monkeypatch, caplog) -> None:
    for name in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    gw = Gateway(config(tmp_path, {"success_callback": ["langfuse"]}), preload=False, store=False,
                 shared_state=False, exporters=False)
    gw.close()
    assert "LANGFUSE_PUBLIC_KEY" in caplog.text


def test_finished_calls_queue_records_then_each_exporters_own_bytes(caplog) -> None:
    """A finished call queues what its record is made of, not its context; the batch loop builds
    the records and has every exporter encode each one: their queues hold the receivers' bytes,
    not records that keep the call's request and answer alive until the next batch goes out. An
    exporter that cannot encode a call loses only that call."""
    import sys

    import orjson

    from proxy.observe import Telemetry
    from proxy.observe.hub import Observer, Wanted

    environ = {"LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk", "LANGFUSE_HOST": "http://127.0.0.1:1",
               "GENERIC_LOGGER_ENDPOINT": "http://127.0.0.1:1/log"}
    wanted = {name: Wanted(name, f"litellm_settings.callbacks[{i}]", success=True, failure=True)
              for i, name in enumerate(("langfuse", "generic_api"))}
    observer = Observer(wanted, {}, Telemetry(), environ=environ)
    langfuse, generic = observer.exporters
    good, odd = make_ctx(), make_ctx()
    encode = langfuse.encode
    langfuse.encode = lambda record: 1 / 0 if record["id"] == odd.request_id else encode(record)  # type: ignore[method-assign]
    try:
        held = sys.getrefcount(good), sys.getrefcount(good.headers)
        observer.finish(good, 0.5)
        observer.finish(odd, None)
        # the intake queue holds what the calls' records are made of, not their contexts (nor
        # what only those hold: the headers)
        assert (sys.getrefcount(good), sys.getrefcount(good.headers)) == held
        assert [call[0] for call, _ in observer.calls._items] == [good.request_id, odd.request_id]
        observer.publish([observer.calls._items.popleft() for _ in range(2)])
        queued_langfuse, queued_generic = list(langfuse.queue._items), list(generic.queue._items)
    finally:
        observer.close(0)
    assert [type(item) for item in queued_langfuse + queued_generic] == [bytes, bytes, bytes]
    trace, generation = orjson.loads(b"[" + queued_langfuse[0] + b"]")
    assert trace["type"] == "trace-create" and generation["body"]["id"] == good.request_id
    assert generation["body"]["input"] == {"messages": [{"role": "user", "content": "hi"}]}
    assert generation["body"]["usage"]["totalCost"] == 0.5
    assert [orjson.loads(item)["id"] for item in queued_generic] == [good.request_id, odd.request_id]
    assert f"langfuse could not encode call {odd.request_id}" in caplog.text
    body = orjson.loads(Langfuse.body(queued_langfuse))
    assert [event["type"] for event in body["batch"]] == ["trace-create", "generation-create"]
    assert body["metadata"]["sdk_name"] == "llmrelay"
