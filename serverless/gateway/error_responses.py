"""Errors become `{"error": "..."}` JSON with the right status, at one place: one middleware.

    PodqError (BadRequest, Unauthorized, ...)      -> its status_code
    msgspec.ValidationError / DecodeError          -> 400, msgspec's message (it names the field)
    aiohttp HTTP errors (unknown route, bad method) -> their status, as JSON
    Redis unreachable                              -> 503
    anything else                                  -> 500 with no detail; the traceback is logged

No traceback ever goes into a response (saq's `exceptions` middleware sends one).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from serverless.errors import PodqError

log = logging.getLogger("podq.gateway")

_encode = msgspec.json.Encoder().encode


class ErrorReply(msgspec.Struct):
    """Every error the gateway answers."""

    error: str


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON error response: `{"error": message}` with `status`.

    Args:
        status: the HTTP status code.
        message: what happened and how to fix it.
        headers: extra headers, e.g. Retry-After or Allow.

    Returns:
        The response, ready to return from a handler or middleware.
    """
    return web.Response(
        status=status,
        body=_encode(ErrorReply(message)),
        content_type="application/json",
        headers=headers,
    )


def _http_message(method: str, path: str, exc: web.HTTPException) -> str:
    match exc.status:
        case 404:
            route = f"{method} {path}"
            return f"no route for {route}; see GET /openapi.json for the routes"
        case 405:
            allowed = exc.headers.get("Allow", "")
            return f"{method} is not allowed on {path}; use {allowed}"
        case _:
            return exc.reason if not exc.text else exc.text.removeprefix(f"{exc.status}: ")


def _from_http(method: str, path: str, exc: web.HTTPException) -> web.Response:
    keep = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return error_response(exc.status, _http_message(method, path, exc), keep)


def answer_for(exc: Exception, method: str, path: str) -> web.Response | None:
    """The JSON answer for an exception a handler raised while serving `method path`, or None
    for one that must propagate (a dropped connection, an aiohttp redirect). Call it from the
    `except` block: an unexpected exception is logged with its traceback."""
    if isinstance(exc, PodqError):
        return error_response(exc.status_code, str(exc))
    if isinstance(exc, (msgspec.ValidationError, msgspec.DecodeError)):
        return error_response(400, f"invalid request body: {exc}")
    if isinstance(exc, web.HTTPException):
        return _from_http(method, path, exc) if exc.status >= 400 else None
    if isinstance(exc, RedisError):
        log.warning("Redis error on %s %s: %s", method, path, exc)
        return error_response(503, "the job store (Redis) is unavailable; retry shortly")
    if isinstance(exc, ConnectionResetError):
        return None
    log.exception("unhandled error on %s %s", method, path)
    return error_response(500, "internal error; the gateway log has the details")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every exception a handler raises into a JSON error response (answer_for)."""
    try:
        return await handler(request)
    except Exception as e:  # noqa: BLE001 - answer_for sorts them; CancelledError is not one
        answer = answer_for(e, request.method, request.path)
        if answer is None:
            raise
        return answer
