"""The innermost handler of the pipeline: send the call to the chosen deployment.

The deployment's adapter builds the provider request, ``transport`` sends it, the adapter turns
the answer (or the stream, or the error) back into OpenAI format. For streams the first chunk is
read here, inside the pipeline, so a failure before the first byte can still be retried or fall
back; after that, chunks flow to the client as they arrive.

Two variations: an adapter may answer one request with several upstream calls (``extra["batch"]``,
e.g. Titan embeds one text per call), sent together and parsed by ``parse_batch``; and a
pass-through surface (``/vertex_ai``, ``/bedrock``) puts a ``PassThroughCall`` in
``ctx.extra["pass_through"]``: the client's own provider request, aimed at the chosen deployment
and signed by its adapter, whose answer (bytes, or a byte stream) goes back untranslated as a
``PassThroughReply`` while its usage is read on the way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gevent
from gevent.pool import Pool

from proxy import client_credentials, debuglog
from proxy.errors import BadRequest, ProxyError
from proxy.providers import mock
from proxy.providers.shapes import include_usage

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.deployment import Deployment
    from proxy.providers.base import PassThroughCall, UpstreamCall, UsageMeter
    from proxy.tokens import TokenCounter
    from proxy.transport import Transport

BATCH_CONCURRENCY = 8  # upstream calls in flight at once for one batched request


@dataclass(slots=True)
class PassThroughReply:
    """The upstream's own answer to a ``PassThroughCall``: status, headers (lower-case names) and
    bytes or a byte stream, for the surface to send back as it came."""

    status: int
    headers: dict[str, str]
    body: bytes | Iterator[bytes]


def upstream_error(ctx: RequestContext, err: ProxyError) -> PassThroughReply | None:
    """The upstream's own error answer when ``err`` is the pass-through call's failure, else None
    (the error is the proxy's own, e.g. a refused key)."""
    found = ctx.extra.get("pass_through_error")
    return found[1] if found is not None and found[0] is err else None


class Dispatcher:
    """Callable ``handler(ctx)`` at the centre of the onion."""

    def __init__(
        self,
        transport: Transport,
        tokens: TokenCounter,
        timeout: float,
        stream_timeout: float | None = None,
        allow_client_side_credentials: bool = False,
        secrets: frozenset[str] = frozenset(),
    ) -> None:
        #: set when debug logging is on: redacts every upstream request and response it logs
        self.redactor = debuglog.Redactor(secrets) if debuglog.enabled() else None
        self.transport = transport
        self.tokens = tokens
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self.allow_client_side_credentials = allow_client_side_credentials

    def __call__(self, ctx: RequestContext) -> Any:
        dep = ctx.deployment
        assert dep is not None, "route must run before the upstream call"
        if "client_credentials" in ctx.extra:  # here, so no pipeline can leave them unchecked
            dep = ctx.deployment = client_credentials.apply(ctx, dep, self.allow_client_side_credentials)
        pass_through = ctx.extra.get("pass_through")
        if pass_through is not None:
            return self._pass_through(ctx, dep, pass_through)
        text = ctx.mock_response if ctx.mock_response is not None else dep.mock_response
        if text is not None:
            return self._mock(ctx, dep, str(text))
        adapter = dep.adapter
        if ctx.kind not in adapter.kinds:
            raise BadRequest(f"model {ctx.model!r} ({dep.provider}) does not serve {ctx.kind} requests")
        call = adapter.sign(adapter.build_request(ctx, dep), dep)
        timeout = ctx.extra.get("timeout") or dep.timeout or self.timeout
        redactor = self.redactor.with_secrets([dep.api_key, *dep.supplied, *dep.headers.values()]) \
            if self.redactor is not None else None
        if redactor is not None:
            debuglog.log.debug("upstream request [%s]: %s %s headers=%s body=%s", ctx.request_id, call.method,
                               redactor.text(call.url), redactor.headers(call.headers), redactor.text(call.body))
        if call.extra.get("batch"):
            return self._batch(ctx, dep, call.extra["batch"], timeout)
        if not ctx.stream or not call.stream:  # one plain call; also for providers that cannot stream
            resp = self.transport.send(call, timeout)
            if redactor is not None:
                debuglog.log.debug("upstream response [%s]: %s body=%s", ctx.request_id, resp.status,
                                   redactor.text(resp.body))
            if resp.status >= 400:
                raise adapter.map_error(resp.status, resp.headers, resp.body)
            limits = adapter.rate_limits(resp.headers)
            if limits is not None:
                ctx.response_headers.update(limits)
            if ctx.stream:  # replay the whole answer as the stream the client asked for
                chunks = adapter.parse_stream(ctx, dep, iter((resp.body,)))
                ctx.response = self._relay(ctx, dep, next(chunks, None), chunks)
                return ctx.response
            data = adapter.parse_response(ctx, dep, resp.status, resp.body)
            usage = data.get("usage")
            if not isinstance(usage, dict):  # the provider gave none: count it, as clients expect one
                usage = data["usage"] = self._estimate_usage(ctx, dep, _answer_text(data))
            ctx.usage = usage
            ctx.response = data
            return data
        read_timeout = ctx.extra.get("stream_timeout") or dep.stream_timeout or self.stream_timeout or timeout
        stream = self.transport.open_stream(call, timeout, read_timeout)
        if redactor is not None:
            debuglog.log.debug("upstream response [%s]: %s (stream; chunks are not logged)", ctx.request_id,
                               stream.status)
        if stream.status >= 400:
            raise adapter.map_error(stream.status, stream.headers, stream.read_all(timeout))
        limits = adapter.rate_limits(stream.headers)
        if limits is not None:
            ctx.response_headers.update(limits)
        body = stream.chunks() if call.extra.get("binary") else stream.lines()
        chunks = adapter.parse_stream(ctx, dep, body)
        first = next(chunks, None)  # errors before the first byte surface here, retryable
        ctx.extra["first_token_at"] = time.perf_counter()  # time to first token, for the log record
        ctx.response = self._relay(ctx, dep, first, chunks)
        return ctx.response

    def _batch(self, ctx: RequestContext, dep: Deployment, calls: list[UpstreamCall], timeout: float) -> Any:
        """Several upstream calls for one request, sent together; the first failure is the answer."""
        adapter = dep.adapter
        pool = Pool(BATCH_CONCURRENCY)
        jobs = [pool.spawn(self.transport.send, call, timeout) for call in calls]
        try:
            gevent.joinall(jobs, raise_error=True)
        finally:
            pool.kill(block=False)
        bodies = []
        for job in jobs:
            resp = job.value
            if resp.status >= 400:
                raise adapter.map_error(resp.status, resp.headers, resp.body)
            bodies.append(resp.body)
        data = adapter.parse_batch(ctx, dep, bodies)
        usage = data.get("usage")
        if not isinstance(usage, dict):
            usage = data["usage"] = self._estimate_usage(ctx, dep, "")
        ctx.usage = usage
        ctx.response = data
        return data

    def _pass_through(self, ctx: RequestContext, dep: Deployment, request: PassThroughCall) -> PassThroughReply:
        """Forward a client's provider request to ``dep``; its bytes go back unchanged, its usage is
        read as they pass.

        An upstream error is raised as the adapter maps it (so retries, cooldowns and fallbacks see
        it), with the upstream's own answer kept for the surface to relay (``upstream_error``).
        """
        adapter = dep.adapter
        if dep.provider != request.provider:
            raise BadRequest(f"model {ctx.model!r} is served by {dep.provider}, not {request.provider}",
                             param="model")
        call = adapter.sign(adapter.pass_through(request, dep), dep)
        timeout = ctx.extra.get("timeout") or dep.timeout or self.timeout
        if self.redactor is not None:
            redactor = self.redactor.with_secrets([dep.api_key, *dep.supplied, *dep.headers.values()])
            debuglog.log.debug("upstream request [%s]: %s %s headers=%s body=%s", ctx.request_id, call.method,
                               redactor.text(call.url), redactor.headers(call.headers), redactor.text(call.body))
        meter = adapter.pass_through_meter(request)
        if not call.stream:
            resp = self.transport.send(call, timeout)
            reply = PassThroughReply(resp.status, resp.headers, resp.body)
            if resp.status >= 400:
                raise self._upstream_error(ctx, adapter, reply, resp.body)
            meter.answer(resp.headers, resp.body)
            ctx.usage = meter.usage or mock.usage(0, 0)
            ctx.response = reply
            return reply
        read_timeout = dep.stream_timeout or self.stream_timeout or timeout
        stream = self.transport.open_stream(call, timeout, read_timeout)
        if stream.status >= 400:
            body = stream.read_all(timeout)
            raise self._upstream_error(ctx, adapter, PassThroughReply(stream.status, stream.headers, body), body)
        pieces = stream.chunks() if call.extra.get("binary") else stream.lines()
        reply = ctx.response = PassThroughReply(stream.status, stream.headers, self._metered(ctx, pieces, meter))
        return reply

    @staticmethod
    def _upstream_error(ctx: RequestContext, adapter: Any, reply: PassThroughReply, body: bytes) -> ProxyError:
        err = adapter.map_error(reply.status, reply.headers, body)
        ctx.extra["pass_through_error"] = (err, reply)
        return err

    @staticmethod
    def _metered(ctx: RequestContext, pieces: Iterator[bytes], meter: UsageMeter) -> Iterator[bytes]:
        """Pieces as they arrive, read on the way by ``meter`` for the usage it finds."""
        try:
            for piece in pieces:
                meter.feed(piece)
                yield piece
        except ProxyError as err:
            ctx.status, ctx.error = err.status, err  # the status line is sent: the stream just ends
        finally:
            close = getattr(pieces, "close", None)
            if close:
                close()  # a client that left closes the upstream too
            ctx.usage = meter.usage or ctx.usage or mock.usage(0, 0)

    def _relay(
        self,
        ctx: RequestContext,
        dep: Deployment,
        first: dict[str, Any] | None,
        chunks: Iterator[dict[str, Any]],
    ) -> Iterator[dict[str, Any]]:
        """Pass chunks through untouched, noting usage (or estimating it) for accounting."""
        pieces: list[str] = []
        try:
            if first is None:
                return
            chunk: dict[str, Any] | None = first
            while chunk is not None:
                usage = chunk.get("usage")
                if usage:
                    ctx.usage = usage
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or choice
                    content = delta.get("content") if isinstance(delta, dict) else None
                    if isinstance(content, str):
                        pieces.append(content)
                    elif choice.get("text"):
                        pieces.append(choice["text"])
                yield chunk
                chunk = next(chunks, None)
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()
            text = ctx.extra["stream_text"] = "".join(pieces)  # the answer, for the log record
            if ctx.usage is None:
                ctx.usage = self._estimate_usage(ctx, dep, text)

    def _prompt_tokens(self, ctx: RequestContext, dep: Deployment) -> int:
        """Prompt tokens when the upstream did not say (a model's custom_tokenizer is kept for
        /utils/token_counter: loading one may need the network, never acceptable mid-request)."""
        body = ctx.body
        if ctx.kind == "chat":
            return self.tokens.count(dep.upstream_model, messages=body.get("messages") or []).total_tokens
        prompt = body.get("prompt") if ctx.kind == "completion" else body.get("input")
        if isinstance(prompt, (str, list)) and all(isinstance(p, str) for p in (
                prompt if isinstance(prompt, list) else [prompt])):
            return self.tokens.count(dep.upstream_model, prompt=prompt).total_tokens
        return 0

    def _estimate_usage(self, ctx: RequestContext, dep: Deployment, completion: str) -> dict[str, int]:
        try:
            prompt_tokens = self._prompt_tokens(ctx, dep)
            completion_tokens = self.tokens.count(dep.upstream_model, prompt=completion).total_tokens \
                if completion else 0
        except ProxyError:
            return mock.usage(0, 0)
        return mock.usage(prompt_tokens, completion_tokens)

    def _mock(self, ctx: RequestContext, dep: Deployment, text: str) -> Any:
        prompt_tokens = self._prompt_tokens(ctx, dep)
        completion_tokens = self.tokens.count(dep.upstream_model, prompt=text).total_tokens if text else 0
        model = dep.upstream_model
        if ctx.stream:
            include = include_usage(ctx.body)
            ctx.usage = mock.usage(prompt_tokens, completion_tokens)
            ctx.response = mock.mock_stream(ctx.kind, model, text, prompt_tokens, completion_tokens, include)
            return ctx.response
        inputs = ctx.body.get("input")
        n_inputs = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
        data = mock.mock_response(ctx.kind, model, text, prompt_tokens, completion_tokens, n_inputs)
        ctx.usage = data.get("usage")
        ctx.response = data
        return data


def _answer_text(data: dict[str, Any]) -> str:
    """The generated text of a non-streamed answer (for estimating usage the upstream omitted)."""
    parts = []
    for choice in data.get("choices") or ():
        message = choice.get("message") or {}
        content = message.get("content") if isinstance(message, dict) else None
        parts.append(content if isinstance(content, str) else choice.get("text") or "")
    return "".join(parts)
