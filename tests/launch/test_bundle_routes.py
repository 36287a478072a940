"""/v1/bundles against a real gateway: upload, read, download, delete, and every refusal."""

from __future__ import annotations

import io
import stat
import zipfile
from typing import Any

import pytest

from serverless.gateway import bundle_routes
from serverless.model import Template
from serverless.registry import Registry
from serverless.store import JobStore
from tests.gateway.conftest import Gateway, GatewayFactory, make_gateway  # noqa: F401 (fixture)
from tests.launch.conftest import DEMO

QUERY = "name={name}&load_predict_fn=demo.inference.load_predict&load_model_fn=demo.inference.load_model"


def demo_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(DEMO.rglob("*.py")):
            archive.write(path, path.relative_to(DEMO.parent).as_posix())
    return buffer.getvalue()


def zip_of(entries: dict[str, bytes], symlink: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Gateway:  # noqa: F811
    return await make_gateway()


async def upload(gateway: Gateway, name: str, data: bytes, extra: str = "") -> Any:
    return await gateway.call("POST", f"/v1/bundles?{QUERY.format(name=name)}{extra}", data=data)


async def test_a_bundle_is_uploaded_read_downloaded_and_deleted(gateway: Gateway) -> None:
    data = demo_zip()
    made = await upload(gateway, "demo", data, "&requirements=numpy%3D%3D2.0%0A%23+a+comment%0A")
    assert made.status == 200, made.body
    bundle = made.body
    assert (bundle["id"], bundle["size"], bundle["requirements"]) == ("demo", len(data), ["numpy==2.0"])
    assert bundle["env"]["PODQ_BUNDLE_ARCHIVE"] == "bundles/demo.zip"
    assert bundle["env"]["PODQ_BUNDLE_LOAD_MODEL_FN"] == "demo.inference.load_model"
    assert bundle["handler"].endswith("worker/bundle.py")
    assert (await gateway.call("GET", "/v1/bundles/demo")).body == bundle
    assert [b["id"] for b in (await gateway.call("GET", "/v1/bundles")).body] == ["demo"]
    archive = await gateway.call("GET", "/v1/bundles/demo/archive")
    assert (archive.status, archive.body, archive.headers["Content-Type"]) == (200, data, "application/zip")
    assert (await gateway.call("DELETE", "/v1/bundles/demo")).body == {"id": "demo", "deleted": True}
    assert (await gateway.call("GET", "/v1/bundles/demo")).status == 404


async def test_a_taken_name_is_a_conflict(gateway: Gateway) -> None:
    assert (await upload(gateway, "twice", demo_zip())).status == 200
    again = await upload(gateway, "twice", demo_zip())
    assert again.status == 409
    assert again.body["error"] == "bundle 'twice' already exists; delete it first or pick another name"


@pytest.mark.parametrize("data,message", [
    (b"not a zip", "the body is not a zip archive (File is not a zip file); send the bundle zip as the raw body"),
    (zip_of({"../evil.py": b"x"}),
     "bundle entry '../evil.py' points outside the bundle (absolute or '..'); zip paths relative to the bundle root"),
    (zip_of({"/etc/cron.d/x": b"x"}),
     "bundle entry '/etc/cron.d/x' points outside the bundle (absolute or '..'); zip paths relative to the bundle root"),
    (zip_of({"ok.py": b"x"}, symlink="link"),
     "bundle entry 'link' is a symlink; bundles may hold only files and folders"),
])
async def test_a_bad_archive_is_refused(gateway: Gateway, data: bytes, message: str) -> None:
    answer = await upload(gateway, "bad", data)
    assert (answer.status, answer.body) == (400, {"error": message})
    assert (await gateway.call("GET", "/v1/bundles/bad")).status == 404  # nothing kept


@pytest.mark.parametrize("query,message", [
    ("name=x&load_model_fn=a.b", "query parameter 'load_predict_fn' is required: the dotted path of a "
     "function in the bundle, e.g. my_module.inference.load_model"),
    ("name=x&load_model_fn=a.b&load_predict_fn=nodots", "load_predict_fn='nodots' is not a function path; "
     "use `package.module.function`"),
    ("name=../x&load_model_fn=a.b&load_predict_fn=a.c", "bundle name '../x' is invalid: use 1-128 letters, "
     "digits, '_.:-', starting with a letter or digit"),
    (QUERY.format(name="x") + "&requirements=--index-url%20http://evil", "requirement '--index-url "
     "http://evil' is a pip option; use `package==version` lines"),
    (QUERY.format(name="x") + "&app_config=[1]", "app_config is not a JSON object (Expected `object`, got "
     "`array`); send e.g. app_config={\"k\": 1}"),
])
async def test_bad_parameters_are_refused(gateway: Gateway, query: str, message: str) -> None:
    answer = await gateway.call("POST", f"/v1/bundles?{query}", data=demo_zip())
    assert (answer.status, answer.body) == (400, {"error": message})


async def test_an_archive_over_the_cap_is_413_before_it_is_read(
        gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle_routes, "BUNDLE_MAX_BYTES", 1024)
    answer = await upload(gateway, "big", b"\0" * 4096)
    assert answer.status == 413
    assert answer.body["error"].startswith("bundle of 4096 bytes or more is over the")


async def test_an_archive_that_unpacks_too_big_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle_routes, "UNPACKED_MAX_BYTES", 100)
    with pytest.raises(Exception, match="the bundle unpacks to 1000 bytes"):
        bundle_routes.check_archive(zip_of({"a.bin": b"\0" * 1000}))


async def test_unknown_bundles_are_404(gateway: Gateway) -> None:
    for method, path in [("GET", "/v1/bundles/nope"), ("GET", "/v1/bundles/nope/archive"),
                         ("DELETE", "/v1/bundles/nope")]:
        answer = await gateway.call(method, path)
        assert (answer.status, answer.body) == (
            404, {"error": "bundle 'nope' not found; list them with GET /v1/bundles"})


async def test_a_bundle_a_template_runs_cannot_be_deleted(gateway: Gateway, store: JobStore) -> None:
    bundle = (await upload(gateway, "used", demo_zip())).body
    await Registry(store.redis).put_template(Template(id="launch-x", name="x", handler=bundle["handler"], env=bundle["env"]))
    answer = await gateway.call("DELETE", "/v1/bundles/used")
    assert (answer.status, answer.body["error"]) == (409, "bundle 'used' is run by template(s) launch-x; "
                                                     "delete their endpoints and templates first (delete_model_endpoint)")


async def test_bundles_need_the_admin_key(gateway: Gateway) -> None:
    assert (await gateway.call("GET", "/v1/bundles", auth=False)).status == 401


@pytest.mark.parametrize("text,expected", [
    ("", []),
    ("numpy==2.0\n\n# comment\ntorch>=2 # inline\n", ["numpy==2.0", "torch>=2"]),
])
def test_requirements_text_becomes_lines(text: str, expected: list[str]) -> None:
    assert bundle_routes.parse_requirements(text) == expected
