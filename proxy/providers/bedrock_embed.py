"""Bedrock embeddings through ``InvokeModel`` (``POST /model/{modelId}/invoke``), per model family.

- Amazon Titan Text Embeddings G1 (``amazon.titan-embed-text-v1``, ``amazon.titan-embed-g1-text-02``):
  ``{"inputText": str}`` -> ``{"embedding": [float], "inputTextTokenCount": int}``.
- Titan Text Embeddings V2 (``amazon.titan-embed-text-v2:0``): the same, plus ``dimensions``
  (1024, 512 or 256) and ``normalize``; the answer also holds ``embeddingsByType``.
- Cohere Embed (``cohere.embed-english-v3``, ``cohere.embed-multilingual-v3``, ...):
  ``{"texts": [str], "input_type": "search_document", "truncate", "embedding_types"}`` ->
  ``{"id", "texts", "embeddings": [[float]], "response_type": "embeddings_floats"}`` (or
  ``"embeddings": {"float": [[...]]}`` with ``"response_type": "embeddings_by_type"``).

Titan embeds one text per call, so a list of inputs becomes one call per input (sent together by
the dispatcher, see ``UpstreamCall.extra["batch"]``); Cohere takes the whole list in one call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from proxy.errors import BadRequest, UpstreamError
from proxy.providers.base import load_json
from proxy.providers.shapes import embedding_response, text_inputs

if TYPE_CHECKING:
    from proxy.context import RequestContext

#: Cohere's default input_type when the request names none (LiteLLM's default too).
COHERE_INPUT_TYPE = "search_document"
TITAN_V2_DIMENSIONS = (256, 512, 1024)


def family(model: str) -> str:
    """``titan_v1`` | ``titan_v2`` | ``cohere`` for a Bedrock embedding model id (region prefix allowed)."""
    name = model.rsplit("/", 1)[-1]
    if "titan-embed-text-v2" in name:
        return "titan_v2"
    if "titan-embed-text-v1" in name or "titan-embed-g1-text" in name:
        return "titan_v1"
    if "cohere.embed" in name:
        return "cohere"
    raise BadRequest(f"bedrock embedding model {model!r} is not supported; use amazon.titan-embed-text-v1, "
                     "amazon.titan-embed-text-v2:0 or a cohere.embed-* model", param="model")


def request_bodies(request: dict[str, Any], model: str) -> list[dict[str, Any]]:
    """The InvokeModel body (or, for Titan, one body per input) of an OpenAI embedding request."""
    kind = family(model)
    texts = text_inputs(request.get("input"), "bedrock")
    if kind == "cohere":
        body: dict[str, Any] = {"texts": texts, "input_type": request.get("input_type") or COHERE_INPUT_TYPE}
        for key in ("truncate", "embedding_types"):
            if request.get(key) is not None:
                body[key] = request[key]
        return [body]
    dimensions = request.get("dimensions")
    extra: dict[str, Any] = {}
    if kind == "titan_v2":
        if dimensions is not None:
            if dimensions not in TITAN_V2_DIMENSIONS:
                raise BadRequest("dimensions: amazon.titan-embed-text-v2 accepts 256, 512 or 1024",
                                 param="dimensions")
            extra["dimensions"] = dimensions
        if request.get("normalize") is not None:
            extra["normalize"] = bool(request["normalize"])
    elif dimensions is not None:
        raise BadRequest("dimensions: amazon.titan-embed-text-v1 has a fixed size", param="dimensions")
    return [{"inputText": text, **extra} for text in texts]


def to_embeddings(ctx: RequestContext, model: str, bodies: list[bytes]) -> dict[str, Any]:
    """InvokeModel answers (one per call, in input order) -> an OpenAI embedding list."""
    kind = family(model)
    if kind == "cohere":
        data = load_json(bodies[0], "bedrock")
        embeddings = data.get("embeddings") if isinstance(data, dict) else None
        if isinstance(embeddings, dict):  # response_type embeddings_by_type
            embeddings = embeddings.get("float")
        if not isinstance(embeddings, list):
            raise UpstreamError("upstream bedrock returned an unexpected Cohere embedding body")
        return embedding_response(ctx, model, embeddings, None)  # no count in the body: estimated
    vectors, tokens = [], 0
    for raw in bodies:
        data = load_json(raw, "bedrock")
        vector = data.get("embedding") if isinstance(data, dict) else None
        if not isinstance(vector, list):
            raise UpstreamError("upstream bedrock returned an unexpected Titan embedding body")
        vectors.append(vector)
        tokens += int(data.get("inputTextTokenCount") or 0)
    return embedding_response(ctx, model, vectors, tokens)


def dumps(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)
