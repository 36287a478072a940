"""Console sessions: the admin key signs in once, a signed cookie stands for it from then on.

EventSource cannot send an `Authorization` header, so the console authenticates by cookie. The
cookie never holds the key: it holds a token `<nonce>.<expires_s>.<signature>`, the signature an
HMAC-SHA256 of the nonce and expiry under a secret kept in Redis (keys.CONSOLE_SECRET, made
with SET NX by the first replica that needs it), so a session signed by one gateway replica is
valid on all of them and changes nothing when the admin key is rotated except who can sign in
next. Deleting keys.CONSOLE_SECRET signs every session out at once. Sign-out marks the nonce
signed-out in Redis (keys.console_signed_out) until the token would have expired, so a copied
cookie stops working too.

The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it)
and Secure when the console is served over https. A wrong key is refused like any other (the
comparison is KeyChecker's, constant time, on digests).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import msgspec
from aiohttp import web
from redis.asyncio import Redis

from serverless import keys
from serverless.gateway import state
from serverless.gateway.auth import hash_key

COOKIE = "podq_console"
SESSION_S = 12 * 3600


class Session(msgspec.Struct, frozen=True):
    """A valid session: its nonce (what the CSRF token is bound to) and when it ends."""

    nonce: str
    expires_s: int
    csrf: str


def _sign(secret: bytes, message: str) -> str:
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def make_token(secret: bytes, nonce: str, expires_s: int) -> str:
    """The cookie value for a session (pure)."""
    return f"{nonce}.{expires_s}.{_sign(secret, f'{nonce}.{expires_s}')}"


def csrf_token(secret: bytes, nonce: str) -> str:
    """The CSRF token of the session with `nonce` (pure): only a holder of the secret makes it."""
    return _sign(secret, f"csrf:{nonce}")[:40]


def read_token(secret: bytes, token: str | None, now_s: float) -> Session | None:
    """The session a cookie value stands for, or None when it is malformed, forged or expired
    (pure; whether it was signed out is asked of Redis by `session_of`)."""
    if not token or token.count(".") != 2:
        return None
    nonce, expires, signature = token.split(".")
    if not expires.isdigit() or not nonce.isalnum():
        return None
    if not hmac.compare_digest(signature, _sign(secret, f"{nonce}.{expires}")):
        return None
    if int(expires) <= now_s:
        return None
    return Session(nonce, int(expires), csrf_token(secret, nonce))


async def shared_secret(redis: Redis) -> bytes:
    """The signing secret every replica shares; made by the first that needs it."""
    await redis.set(keys.CONSOLE_SECRET, secrets.token_hex(32), nx=True)
    value = await redis.get(keys.CONSOLE_SECRET)
    assert value is not None, f"{keys.CONSOLE_SECRET} vanished between SET NX and GET"
    return bytes(value)


async def session_of(request: web.Request) -> Session | None:
    """The request's valid session, or None (no cookie, forged, expired or signed out)."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    redis = request.app[state.STORE].redis
    session = read_token(await shared_secret(redis), token, time.time())
    if session is None or await redis.exists(keys.console_signed_out(session.nonce)):
        return None
    return session


def key_is_admin(request: web.Request, key: str) -> bool:
    """True when `key` is this gateway's admin key (KeyChecker: digests, constant time)."""
    return bool(key) and request.app[state.KEYS].is_admin(hash_key(key))


async def sign_in(request: web.Request, response: web.StreamResponse) -> None:
    """Start a session: set its cookie on `response` (call only after key_is_admin)."""
    secret = await shared_secret(request.app[state.STORE].redis)
    expires = int(time.time()) + SESSION_S
    token = make_token(secret, secrets.token_hex(16), expires)
    response.set_cookie(COOKIE, token, max_age=SESSION_S, path="/console", httponly=True,
                        samesite="Strict", secure=request.secure)


async def sign_out(request: web.Request, session: Session, response: web.StreamResponse) -> None:
    """End `session` on every replica, and clear its cookie."""
    left = max(1, session.expires_s - int(time.time()))
    await request.app[state.STORE].redis.set(keys.console_signed_out(session.nonce), b"1", ex=left)
    response.del_cookie(COOKIE, path="/console")
