"""The /v1/keys handlers (admin key only): create, list and revoke API keys.

A key is shown once, when it is created; Redis keeps only its sha256 digest (auth.py). A key
may be scoped to some endpoints: it then reaches only their /v2 routes (403 elsewhere).
"""

from __future__ import annotations

import secrets

import msgspec
from aiohttp import web

from serverless import keys
from serverless.errors import BadRequest, NotFound
from serverless.gateway import auth, state
from serverless.gateway.limits import MB, decode_body, read_body
from serverless.gateway.replies import encode
from serverless.model import ApiKey


class KeyBody(msgspec.Struct, forbid_unknown_fields=True):
    label: str = ""
    endpoints: list[str] = []  # empty: every endpoint
    worker: bool = False  # a worker key (RunPod worker protocol routes only)


class NewKey(msgspec.Struct):
    """The created key: `key` is shown here and never again."""

    key: str
    digest: str
    label: str
    endpoints: list[str]
    worker: bool = False


class Revoked(msgspec.Struct):
    digest: str
    revoked: bool = True


_body = msgspec.json.Decoder(KeyBody)


def _reply(value: msgspec.Struct | list[ApiKey]) -> web.Response:
    return web.Response(body=encode(value), content_type="application/json")


async def create_key(request: web.Request) -> web.Response:
    """POST /v1/keys: make a new key, optionally scoped to some endpoints."""
    body = decode_body(_body, await read_body(request, 1 * MB))
    bad = [e for e in body.endpoints if not keys.valid_id(e)]
    if bad:
        raise BadRequest(f"endpoint id(s) {', '.join(map(repr, bad))} are invalid: use letters, digits, '_.:-'")
    key = f"podq_{secrets.token_urlsafe(32)}"
    digest = await auth.add_key(request.app[state.STORE].redis, key, body.label, body.endpoints,
                                worker=body.worker)
    return _reply(NewKey(key=key, digest=digest, label=body.label,
                         endpoints=sorted(set(body.endpoints)), worker=body.worker))


async def list_keys(request: web.Request) -> web.Response:
    """GET /v1/keys: every stored key's digest, label and scope (never the key)."""
    return _reply(await auth.list_keys(request.app[state.STORE].redis))


async def revoke_key(request: web.Request) -> web.Response:
    """DELETE /v1/keys/{digest}: the key stops working on every replica at once."""
    digest = request.match_info["digest"]
    if not await auth.revoke_key(request.app[state.STORE].redis, digest):
        raise NotFound(f"no stored key with digest {digest!r}; list them with `podq keys list`")
    return _reply(Revoked(digest))
