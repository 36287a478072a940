"""/v1/bundles: model bundles (Scale Launch's `create_model_bundle_from_dirs`), admin key only.

A bundle is a zip of code plus how to load it (`load_model_fn`, `load_predict_fn` as dotted
module paths) and its pip requirements. Upload is one request: the zip is the raw body,
everything else is in query parameters (the requirements as requirements.txt text), so a bundle
never exists half made.

    POST   /v1/bundles?name=..&load_predict_fn=..&load_model_fn=..[&requirements=..][&app_config=..]
    GET    /v1/bundles                 every bundle (newest last)
    GET    /v1/bundles/{bundle_id}     one bundle
    GET    /v1/bundles/{bundle_id}/archive   the zip itself (application/zip)
    DELETE /v1/bundles/{bundle_id}     409 while a template runs it

Stored in the object store (serverless/objects) as `bundles/<id>.zip` and the record beside it,
`bundles/<id>.json`; a bundle's id is its name (Launch: names are unique per owner). The zip is
checked before it is kept: a real zip, at most BUNDLE_MAX_BYTES (413), no absolute or `..`
paths and no symlinks (zip-slip), at most MAX_FILES entries and UNPACKED_MAX_BYTES unpacked.

The record carries what a worker needs to run the bundle (`handler`, `env`): the bundle runner
(worker/bundle.py, found beside this package, never imported: gateway and worker meet only in
stores) and the env that names the archive, its digest, the load functions, the requirements
and where the object store is, as this gateway sees it. A template built from them runs the
bundle (serverless/launch does that per endpoint); workers read the archive from the object
store directly, so they need no gateway key.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import msgspec
from aiohttp import web

import serverless
from serverless import keys
from serverless.errors import BadRequest, Conflict, NotFound, PayloadTooLarge
from serverless.gateway import state
from serverless.gateway.openapi import Param, Route
from serverless.gateway.replies import encode
from serverless.objects import ObjectStore
from serverless.settings import Settings
from serverless.store import now_ms

MB = 1024 * 1024
BUNDLE_MAX_BYTES = 64 * MB  # bundles are code; weights are loaded by load_model_fn
UNPACKED_MAX_BYTES = 512 * MB
MAX_FILES = 10_000
# `pkg.module.fn` (Launch's form) or `pkg.module:fn`
FN_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*[.:][A-Za-z_]\w*$")
# the bundle runner, beside this package in the same distribution
RUNNER = str(Path(serverless.__file__).resolve().parents[1] / "worker" / "bundle.py")
ENV_PREFIX = "PODQ_BUNDLE_"


class Bundle(msgspec.Struct, kw_only=True):
    """A stored model bundle, and what a worker needs to run it."""

    id: str
    name: str
    load_predict_fn: str
    load_model_fn: str
    requirements: list[str] = []
    app_config: dict[str, Any] | None = None
    size: int = 0  # bytes of the zip
    sha256: str = ""
    files: int = 0
    unpacked_bytes: int = 0
    packaging_type: str = "zip"
    location: str = ""  # the archive's object key
    created_at: int = 0
    handler: str = ""  # the bundle runner (a template's `handler`, process backend)
    env: dict[str, str] = {}  # a template's env that makes its workers run this bundle


class BundleDeleted(msgspec.Struct):
    id: str
    deleted: bool = True


_record = msgspec.json.Decoder(Bundle)
_app_config = msgspec.json.Decoder(dict[str, Any])


# ---- pure: checks and shaping --------------------------------------------------------------


def check_archive(data: bytes) -> tuple[int, int]:
    """(entries, unpacked bytes) of a bundle zip, or BadRequest naming what is wrong."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as e:
        raise BadRequest(f"the body is not a zip archive ({e}); send the bundle zip as the raw body") from None
    infos = archive.infolist()
    if len(infos) > MAX_FILES:
        raise BadRequest(f"the bundle has {len(infos)} entries; at most {MAX_FILES} are taken")
    for info in infos:
        _check_entry(info)
    unpacked = sum(i.file_size for i in infos)
    if unpacked > UNPACKED_MAX_BYTES:
        raise BadRequest(f"the bundle unpacks to {unpacked} bytes, over {UNPACKED_MAX_BYTES // MB} MB; "
                         "load large files (weights) in load_model_fn instead")
    try:
        broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, RuntimeError, EOFError, NotImplementedError) as e:
        raise BadRequest(f"the bundle zip cannot be read ({e}); zip it again") from None
    if broken is not None:
        raise BadRequest(f"the bundle zip is corrupt at {broken!r} (bad CRC); zip it again")
    return len(infos), unpacked


def _check_entry(info: zipfile.ZipInfo) -> None:
    name = info.filename
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", name):
        raise BadRequest(f"bundle entry {name!r} points outside the bundle (absolute or '..'); "
                         "zip paths relative to the bundle root")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise BadRequest(f"bundle entry {name!r} is a symlink; bundles may hold only files and folders")


def parse_requirements(text: str) -> list[str]:
    """requirements.txt text -> requirement lines (comments and blank lines dropped)."""
    lines = (line.split(" #", 1)[0].strip() for line in text.splitlines())
    out = [line for line in lines if line and not line.startswith("#")]
    bad = [line for line in out if line.startswith("-")]
    if bad:  # pip options (-e, --index-url, -r) would reach outside the bundle
        raise BadRequest(f"requirement {bad[0]!r} is a pip option; use `package==version` lines")
    return out


def check_fn_path(param: str, value: str | None) -> str:
    if not value:
        raise BadRequest(f"query parameter {param!r} is required: the dotted path of a function "
                         "in the bundle, e.g. my_module.inference.load_model")
    if not FN_PATH.match(value):
        raise BadRequest(f"{param}={value!r} is not a function path; use `package.module.function`")
    return value


def parse_app_config(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        return _app_config.decode(text)
    except msgspec.DecodeError as e:
        raise BadRequest(f"app_config is not a JSON object ({e}); send e.g. app_config={{\"k\": 1}}") from None


def archive_key(bundle_id: str) -> str:
    return f"bundles/{bundle_id}.zip"


def record_key(bundle_id: str) -> str:
    return f"bundles/{bundle_id}.json"


def store_env(settings: Settings) -> dict[str, str]:
    """Where a worker finds the object store this gateway uses."""
    if settings.object_store.strip():
        env = {"PODQ_OBJECT_STORE": settings.object_store.strip()}
        if settings.s3_endpoint_url:
            env["PODQ_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
        return env
    return {"PODQ_DATA_DIR": str(Path(settings.data_dir).resolve())}


def worker_env(bundle: Bundle, settings: Settings) -> dict[str, str]:
    """The env a template gives its workers so that worker/bundle.py runs `bundle`."""
    env = {
        "ID": bundle.id, "ARCHIVE": bundle.location, "SHA256": bundle.sha256,
        "LOAD_MODEL_FN": bundle.load_model_fn, "LOAD_PREDICT_FN": bundle.load_predict_fn,
        "REQUIREMENTS": "\n".join(bundle.requirements),
    }
    if bundle.app_config is not None:
        env["APP_CONFIG"] = encode(bundle.app_config).decode()
    return {**{ENV_PREFIX + k: v for k, v in env.items()}, **store_env(settings)}


# ---- handlers --------------------------------------------------------------------------------


def _reply(value: msgspec.Struct | list[Bundle]) -> web.Response:
    return web.Response(body=encode(value), content_type="application/json")


def _bundle_id(request: web.Request) -> str:
    bundle_id = request.match_info["bundle_id"]
    if not keys.valid_id(bundle_id):
        raise NotFound(f"bundle {bundle_id!r} not found; list them with GET /v1/bundles")
    return bundle_id


async def _read_archive(request: web.Request) -> bytes:
    length = request.content_length
    if length is not None and length > BUNDLE_MAX_BYTES:
        raise PayloadTooLarge(_too_large(length))
    parts, size = [], 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > BUNDLE_MAX_BYTES:
            raise PayloadTooLarge(_too_large(size))
        parts.append(chunk)
    return b"".join(parts)


def _too_large(size: int) -> str:
    return (f"bundle of {size} bytes or more is over the {BUNDLE_MAX_BYTES // MB} MB limit; keep "
            "code in the bundle and download weights in load_model_fn")


def _new_bundle(request: web.Request) -> Bundle:
    query = request.query
    name = query.get("name", "")
    if not keys.valid_id(name):
        raise BadRequest(f"bundle name {name!r} is invalid: use 1-128 letters, digits, '_.:-', "
                         "starting with a letter or digit")
    return Bundle(
        id=name, name=name,
        load_predict_fn=check_fn_path("load_predict_fn", query.get("load_predict_fn")),
        load_model_fn=check_fn_path("load_model_fn", query.get("load_model_fn")),
        requirements=parse_requirements(query.get("requirements", "")),
        app_config=parse_app_config(query.get("app_config")),
        location=archive_key(name), handler=RUNNER,
    )


async def create_bundle(request: web.Request) -> web.Response:
    """POST /v1/bundles: the zip as the raw body, the rest in query parameters."""
    bundle = _new_bundle(request)
    objects = request.app[state.OBJECTS]
    if await objects.size(record_key(bundle.id)) is not None:
        raise Conflict(f"bundle {bundle.id!r} already exists; delete it first or pick another name")
    data = await _read_archive(request)
    files, unpacked = await asyncio.to_thread(check_archive, data)
    bundle = msgspec.structs.replace(
        bundle, size=len(data), sha256=hashlib.sha256(data).hexdigest(), files=files,
        unpacked_bytes=unpacked, created_at=now_ms(),
    )
    bundle = msgspec.structs.replace(bundle, env=worker_env(bundle, request.app[state.SETTINGS]))
    await objects.put(bundle.location, data)
    await objects.put(record_key(bundle.id), encode(bundle))
    return _reply(bundle)


async def _load(objects: ObjectStore, bundle_id: str) -> Bundle:
    try:
        return _record.decode(await objects.get(record_key(bundle_id)))
    except NotFound:
        raise NotFound(f"bundle {bundle_id!r} not found; list them with GET /v1/bundles") from None


async def list_bundles(request: web.Request) -> web.Response:
    """GET /v1/bundles: every bundle, oldest first."""
    objects = request.app[state.OBJECTS]
    found = [k.removeprefix("bundles/").removesuffix(".json")
             for k in await objects.list("bundles/") if k.endswith(".json")]
    bundles = [await _load(objects, bundle_id) for bundle_id in found]
    return _reply(sorted(bundles, key=lambda b: (b.created_at, b.id)))


async def get_bundle(request: web.Request) -> web.Response:
    """GET /v1/bundles/{bundle_id}."""
    return _reply(await _load(request.app[state.OBJECTS], _bundle_id(request)))


async def get_archive(request: web.Request) -> web.StreamResponse:
    """GET /v1/bundles/{bundle_id}/archive: the zip, streamed."""
    objects = request.app[state.OBJECTS]
    bundle = await _load(objects, _bundle_id(request))
    response = web.StreamResponse(headers={
        "Content-Type": "application/zip", "Content-Length": str(bundle.size),
        "Content-Disposition": f'attachment; filename="{bundle.id}.zip"',
    })
    await response.prepare(request)
    async for chunk in objects.stream(bundle.location):
        await response.write(chunk)
    await response.write_eof()
    return response


async def delete_bundle(request: web.Request) -> web.Response:
    """DELETE /v1/bundles/{bundle_id}: refused (409) while a template runs it."""
    objects = request.app[state.OBJECTS]
    bundle = await _load(objects, _bundle_id(request))
    users = [t.id for t in await request.app[state.REGISTRY].templates()
             if t.env.get(ENV_PREFIX + "ID") == bundle.id]
    if users:
        raise Conflict(f"bundle {bundle.id!r} is run by template(s) {', '.join(users)}; delete "
                       "their endpoints and templates first (delete_model_endpoint)")
    await objects.delete(record_key(bundle.id))
    await objects.delete(bundle.location)
    return _reply(BundleDeleted(bundle.id))


_UPLOAD = (
    Param("name", "query", "the bundle's name, also its id (required; 1-128 of letters, digits, '_.:-')"),
    Param("load_predict_fn", "query", "dotted path of load_predict_fn(model) -> predict (required)"),
    Param("load_model_fn", "query", "dotted path of load_model_fn() -> model (required)"),
    Param("requirements", "query", "requirements.txt text: one `package==version` a line"),
    Param("app_config", "query", "a JSON object passed to load_predict_fn as app_config"),
)
BUNDLE = "/v1/bundles/{bundle_id}"
ROUTES: tuple[Route, ...] = (
    Route("create-bundle", ("POST",), "/v1/bundles", create_bundle,
          "Upload a model bundle: the zip as the raw body (application/zip)",
          reply=Bundle, errors=(409, 413), params=_UPLOAD, admin=True),
    Route("list-bundles", ("GET",), "/v1/bundles", list_bundles,
          "Every model bundle", reply=list[Bundle], admin=True),
    Route("get-bundle", ("GET",), BUNDLE, get_bundle, "One model bundle", reply=Bundle, admin=True),
    Route("get-bundle-archive", ("GET",), f"{BUNDLE}/archive", get_archive,
          "A model bundle's zip (application/zip)", admin=True),
    Route("delete-bundle", ("DELETE",), BUNDLE, delete_bundle,
          "Delete a model bundle no template runs", reply=BundleDeleted, errors=(409,), admin=True),
)
