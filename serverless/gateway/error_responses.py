"""Errors become `{"error": "..."}` JSON with the right status, at one place: one middleware.

    PodqError (BadRequest, Unauthorized, ...)      -> its status_code
    msgspec.ValidationError / DecodeError          -> 400, msgspec's message (it names the field)
    aiohttp HTTP errors (unknown route, bad method) -> their status, as JSON
    Redis unreachable                              -> 503
    anything else                                  -> 500 with no detail; the traceback is logged

No traceback ever goes into a response (saq's `exceptions` middleware sends one).
"""

from __future__ import annotations

import asyncio
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


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    match exc.status:
        case 404:
            route = f"{request.method} {request.path}"
            return f"no route for {route}; see GET /openapi.json for the routes"
        case 405:
            allowed = exc.headers.get("Allow", "")
            return f"{request.method} is not allowed on {request.path}; use {allowed}"
        case _:
            return exc.reason if not exc.text else exc.text.removeprefix(f"{exc.status}: ")


def _from_http(request: web.Request, exc: web.HTTPException) -> web.Response:
    keep = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return error_response(exc.status, _http_message(request, exc), keep)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every exception a handler raises into a JSON error response."""
    try:
        return await handler(request)
    except PodqError as e:
        return error_response(e.status_code, str(e))
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        return error_response(400, f"invalid request body: {e}")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _from_http(request, e)
    except RedisError as e:
        log.warning("Redis error on %s %s: %s", request.method, request.path, e)
        return error_response(503, "the job store (Redis) is unavailable; retry shortly")
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error; the gateway log has the details")
