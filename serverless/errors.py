"""podq's exception tree.

    PodqError                      base of everything podq raises on purpose
    ├── ConfigError                a setting is missing or malformed (names the PODQ_* variable)
    │   └── StorageUnavailable     the object store (S3) cannot be used      -> HTTP 503
    ├── RedisUnavailable           Redis cannot be reached (names the URL and the fix)
    ├── BadRequest                 input a caller sent is malformed          -> HTTP 400
    ├── Unauthorized               missing or wrong API key                  -> HTTP 401
    ├── Forbidden                  a valid key that is not the admin key     -> HTTP 403
    ├── NotFound                   unknown endpoint or job (or expired)      -> HTTP 404
    ├── Conflict                   the job is not in a state that allows it  -> HTTP 409
    ├── PayloadTooLarge            body or chunk over its limit              -> HTTP 413
    ├── RateLimited                too many requests                         -> HTTP 429
    ├── JobFailed                  a run_sync / output() whose job ended FAILED (client side)
    ├── EndpointFailed             an endpoint waited for ended `failed` (client side)
    └── EndpointTimeout            an endpoint did not reach `running` in time (also a TimeoutError)

Each error's message says what happened, quotes the bad value and names the fix.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit


class PodqError(Exception):
    """Base class of every error podq raises on purpose."""

    status_code = 500


class ConfigError(PodqError):
    """A setting is missing or malformed."""


class StorageUnavailable(ConfigError):
    """The object store cannot be used: unreachable, no bucket, refused credentials."""

    status_code = 503


class RedisUnavailable(PodqError):
    """Redis could not be reached."""

    status_code = 503

    def __init__(
        self, url: str, cause: BaseException | None = None, *, problem: str = "not reachable",
        fix: str = "start one or set PODQ_REDIS_URL",
    ) -> None:
        detail = f" ({redact_text(str(cause), url)})" if cause else ""
        super().__init__(f"Redis {problem} at {redact_url(url)}{detail}: {fix}")


class BadRequest(PodqError):
    status_code = 400


class Unauthorized(PodqError):
    status_code = 401


class Forbidden(PodqError):
    status_code = 403


class NotFound(PodqError):
    status_code = 404


class Conflict(PodqError):
    status_code = 409


class PayloadTooLarge(PodqError):
    status_code = 413


class RateLimited(PodqError):
    status_code = 429


class JobFailed(PodqError):
    """Raised by clients when a job they waited for ended FAILED, TIMED_OUT or CANCELLED."""

    def __init__(self, job_id: str, status: str, error: object) -> None:
        self.job_id, self.status, self.error = job_id, status, error
        super().__init__(f"job {job_id} ended {status}: {error}")


class EndpointFailed(PodqError):
    """Raised by `ManagedEndpoint.wait()` when the endpoint's status is `failed`."""

    def __init__(self, endpoint_id: str, reason: str) -> None:
        self.endpoint_id, self.reason = endpoint_id, reason
        super().__init__(
            f"endpoint {endpoint_id} failed: {reason or 'no reason given'}; fix its template or "
            "settings (update()) and wait again"
        )


class EndpointTimeout(PodqError, TimeoutError):
    """Raised by `ManagedEndpoint.wait(timeout)` when the endpoint is not running in time."""

    def __init__(self, endpoint_id: str, status: str, timeout: float) -> None:
        self.endpoint_id, self.status = endpoint_id, status
        super().__init__(
            f"endpoint {endpoint_id} is still {status!r} after {timeout} s; wait again with a "
            "longer timeout, or check its workers (podq endpoint get)"
        )


def redact_url(url: str) -> str:
    """Hide the password of a redis:// URL so it can be logged (the user name stays)."""
    scheme, sep, rest = url.partition("://")
    rest, qmark, query = rest.partition("?")  # an `@` in the query is not a password's end
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    masked = f"{user}:***" if ":" in creds else creds
    return f"{scheme}://{masked}@{host}{qmark}{query}"


def redact_text(text: str, url: str) -> str:
    """`text` with the password of `url` (raw and percent-decoded) replaced by ***."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return text
    for secret in {password, unquote(password or "")} - {None, ""}:
        text = text.replace(secret, "***")
    return text
