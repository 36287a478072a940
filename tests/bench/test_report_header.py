"""The report's header names the host's CPU and the versions behind every peer's figure: a
peer's numbers move with the host and its packages, and only same-run ratios compare."""

from __future__ import annotations

from importlib import metadata

from bench.common import cpu_model, versions
from bench.report import report_markdown
from serverless.redis_server import find_server


def test_versions_name_the_installed_packages_and_the_redis_server() -> None:
    listed = dict(item.rsplit(" ", 1) for item in versions().split(", "))
    assert listed["aiohttp"] == metadata.version("aiohttp")
    server = find_server()
    assert ".".join(map(str, server.version)) in listed.values()


def test_the_header_carries_the_cpu_and_the_versions() -> None:
    text = report_markdown([], "2 cores", "python -m bench.run", cpu_model(), "runpod 1.12.0")
    lines = text.splitlines()
    assert lines[3] == "Machine: 2 cores  "
    assert lines[4].startswith("CPU: ") and lines[4] != "CPU:   "
    assert lines[5] == "Versions: runpod 1.12.0"
    # without them (the older call), the header is as before
    assert "CPU:" not in report_markdown([], "2 cores", "c")
