"""The proxy's exception tree and its one rendering into OpenAI's error shape.

Deep code raises a typed ``ProxyError``; only ``ProxyError.body`` turns it into the JSON a client
sees, so every error, whatever its origin, reaches the client as::

    {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}

Tree::

    ProxyError (500, api_error)
    ├── BadRequest (400, invalid_request_error)
    │   ├── ContextWindowExceeded (400, code context_length_exceeded)
    │   ├── ContentPolicyViolation (400, code content_policy_violation)
    │   ├── BudgetExceeded (400, type budget_exceeded: LiteLLM's for a key or team over budget)
    │   ├── RequestTooLarge (413, code request_too_large)
    │   └── HeadersTooLarge (431, code request_header_fields_too_large)
    ├── AuthenticationError (401)
    ├── PermissionDenied (403)
    ├── NotFound (404)
    ├── RequestTimeout (408)
    ├── RateLimited (429, carries retry_after)
    ├── UpstreamError (502 unless the upstream gave a 5xx of its own)
    ├── ServiceUnavailable (503)
    └── GatewayTimeout (504)
"""

from __future__ import annotations

from typing import Any


class ProxyError(Exception):
    """Base of every error a client may see."""

    status = 500
    type = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self._retryable = retryable
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.retry_after = retry_after
        self.headers = dict(headers or {})

    @property
    def retryable(self) -> bool:
        """Whether another attempt (same or other deployment) may succeed."""
        if self._retryable is not None:
            return self._retryable
        return self.status in (408, 429) or self.status >= 500

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code if self.code is not None else str(self.status),
            }
        }

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(self.retry_after)))
        return headers


class BadRequest(ProxyError):
    status = 400
    type = "invalid_request_error"


class ContextWindowExceeded(BadRequest):
    code = "context_length_exceeded"


class ContentPolicyViolation(BadRequest):
    code = "content_policy_violation"


class BudgetExceeded(BadRequest):
    type = "budget_exceeded"  # code stays "400", as LiteLLM sends it


class RequestTooLarge(BadRequest):
    """A body over ``general_settings.max_request_size_mb``."""

    status = 413
    code = "request_too_large"


class HeadersTooLarge(BadRequest):
    """A request line or header block over gunicorn's limits (the worker answers it)."""

    status = 431
    code = "request_header_fields_too_large"


class AuthenticationError(ProxyError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ProxyError):
    status = 403
    type = "permission_error"


class NotFound(ProxyError):
    status = 404
    type = "not_found_error"


class RequestTimeout(ProxyError):
    status = 408
    type = "timeout_error"
    code = "timeout"


class RateLimited(ProxyError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamError(ProxyError):
    status = 502
    type = "api_error"


class ServiceUnavailable(ProxyError):
    status = 503
    type = "api_error"
    code = "service_unavailable"


class GatewayTimeout(ProxyError):
    status = 504
    type = "timeout_error"
    code = "timeout"


class ConfigError(Exception):
    """A config that cannot be served; the message names every bad config path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


_BY_STATUS: dict[int, type[ProxyError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    408: RequestTimeout,
    422: BadRequest,
    429: RateLimited,
    503: ServiceUnavailable,
    504: GatewayTimeout,
}


def error_for_status(status: int) -> type[ProxyError]:
    """The ProxyError class for an upstream status (used by provider adapters)."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return UpstreamError if status >= 500 else BadRequest
