"""GatewayError hierarchy, each class rendering as OpenAI's error JSON with its status."""

from __future__ import annotations

from typing import Any, ClassVar


class GatewayError(Exception):
    """Base: an error the client should see, in OpenAI's shape."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class UnsupportedMediaType(InvalidRequest):
    status = 415
    default_code = "unsupported_media_type"


class ContextLengthExceeded(InvalidRequest):
    default_code = "context_length_exceeded"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"
    default_code = "forbidden"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    default_code = "model_not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    default_code = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float = 1, code: str | None = None) -> None:
        seconds = max(1, round(retry_after))
        super().__init__(message, code=code, headers={"Retry-After": str(seconds)})


class QueueFull(RateLimited):
    default_code = "local_queue_full"


class InternalError(GatewayError):
    status = 500
    type = "server_error"
    default_code = "internal_error"


class UpstreamError(GatewayError):
    """The backend failed in a way the client should see (after failover gave up)."""

    status = 502
    type = "upstream_error"
    default_code = "upstream_error"


class NoRouteAvailable(GatewayError):
    """Nothing that could serve the request is reachable right now."""

    status = 503
    type = "service_unavailable"
    default_code = "no_route_available"


class NotReady(GatewayError):
    status = 503
    type = "service_unavailable"
    default_code = "not_ready"


class RequestTimeout(GatewayError):
    """The request outlived `server.request_timeout_s`."""

    status = 504
    type = "timeout_error"
    default_code = "request_timeout"


class BodyTimeout(GatewayError):
    """The client did not send its whole body within `server.body_timeout_s`."""

    status = 408
    type = "timeout_error"
    default_code = "body_timeout"


class ShuttingDown(GatewayError):
    """The gateway is stopping and this stream outlived the shutdown grace."""

    status = 503
    type = "service_unavailable"
    default_code = "shutting_down"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "timeout_error"
    default_code = "upstream_timeout"
