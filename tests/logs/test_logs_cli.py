"""`podq logs`: where lines come from, flags refused where they would do nothing, the rows it
prints, the process backend's files (pure parts and real files; the gateway and the engines
are exercised in test_logs_process.py and test_logs_docker.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from scaler.logs_cli import build_parser, format_line, logs_path, main, only_worker, process_lines, refused_flag, source

parse = build_parser().parse_args


@pytest.mark.parametrize("argv,expected", [
    (["ep"], None),                                           # the gateway's lines
    (["ep", "--job", "j", "-f"], None),
    (["ep", "--backend", "process"], "process"),
    (["ep", "--backend", "kubernetes"], "kubernetes"),
    (["ep", "--docker-host", "tcp://h:2375"], "docker"),      # as `podq logs` read before
    (["ep", "--backend", "swarm", "--docker-host", "tcp://h:2375"], "swarm"),
])
def test_lines_come_from_the_gateway_unless_a_backend_is_named(argv: list[str], expected: str | None) -> None:
    assert source(parse(argv)) == expected


@pytest.mark.parametrize("argv,message", [
    (["ep"], ""),
    (["ep", "--worker", "w1", "--job", "j", "-f", "--since", "5", "--url", "u", "--api-key", "k"], ""),
    (["ep", "--backend", "docker", "--worker", "w1", "--tail", "5"], ""),
    (["ep", "--backend", "process", "--log-dir", "/tmp/x"], ""),
    (["ep", "--backend", "docker", "--job", "j"],
     "--job applies to the gateway's lines, not to --backend docker (backend logs carry no job ids)"),
    (["ep", "--docker-host", "tcp://h:2375", "-f"], "-f applies to the gateway's lines, not to --backend docker"),
    (["ep", "--backend", "kubernetes", "--url", "http://gw"], "--url applies to the gateway's lines, not to --backend kubernetes"),
    (["ep", "--namespace", "gpu"], "--namespace reads a backend's own logs: add --backend (kubernetes for "
                                   "--namespace, process for --log-dir)"),
    (["ep", "--log-dir", "/tmp/x"], "--log-dir reads a backend's own logs: add --backend (kubernetes for "
                                    "--namespace, process for --log-dir)"),
    (["ep", "--backend", "swarm", "--log-dir", "/tmp/x"], "--log-dir applies to --backend process only, not swarm"),
    (["ep", "--backend", "process", "--docker-host", "tcp://h:2375"],
     "--docker-host and --namespace do not apply to --backend process (it reads files)"),
])
def test_a_flag_that_would_do_nothing_is_refused(argv: list[str], message: str) -> None:
    assert refused_flag(parse(argv)) == message


def test_main_exits_with_the_refusal() -> None:
    with pytest.raises(SystemExit, match=r"^podq logs: --job applies to the gateway's lines, not to --backend process"):
        main(["ep", "--backend", "process", "--job", "j"])


@pytest.mark.parametrize("line,row", [
    ({"id": "1-0", "time": 1_764_561_296_007, "worker": "w1", "job": "j1", "stream": "stdout", "level": "",
      "line": "hello"}, "03:54:56.007 w1 j1 | hello"),
    ({"id": "1-0", "time": 1_764_561_296_007, "worker": "w1", "job": "", "stream": "stderr", "level": "",
      "line": "oops"}, "03:54:56.007 w1 - | [stderr] oops"),
    ({"id": "1-0", "time": 0, "worker": "w2", "job": "j2", "stream": "log", "level": "warning",
      "line": "disk"}, "00:00:00.000 w2 j2 | [warning] disk"),
])
def test_a_gateway_line_prints_as_time_worker_job_and_text(line: dict, row: str) -> None:
    assert format_line(line) == row


@pytest.mark.parametrize("argv,path", [
    (["ep"], "endpoints/ep/logs?tail=100"),
    (["ep/x", "--tail", "5", "--job", "j 1", "--worker", "w", "--since", "17-0"],
     "endpoints/ep%2Fx/logs?tail=5&worker=w&job=j+1&since=17-0"),
])
def test_the_flags_become_the_query(argv: list[str], path: str) -> None:
    assert logs_path(parse(argv).endpoint, parse(argv)) == path


def test_worker_filters_backend_lines() -> None:
    pairs = [("w1", "a"), ("w2", "b"), ("w1", "c")]
    assert only_worker(pairs, "w1") == [("w1", "a"), ("w1", "c")]
    assert only_worker(pairs, None) == pairs


def test_the_process_backends_files_of_the_endpoint_are_read_oldest_first(tmp_path: Path) -> None:
    files = {
        "ep-1-0123abcd.log": "boot\nline 1\nline 2\n",  # the scaler's names: <endpoint>-<8 hex>
        "ep-1-89abcdef.log": "other worker\n",
        "ep-1-x-01234567.log": "endpoint ep-1-x\n",  # another endpoint whose id starts the same
        "ep-12-01234567.log": "endpoint ep-12\n",
        "ep-1-notahexid.log": "not a worker of the scaler\n",
    }
    for i, (name, text) in enumerate(files.items()):
        path = tmp_path / name
        path.write_bytes(text.encode() + (b"bad \xff byte\n" if i == 1 else b""))
        os.utime(path, (time.time() - 100 + i, time.time() - 100 + i))  # written in this order
    assert process_lines("ep-1", 2, tmp_path) == [
        ("ep-1-0123abcd", "line 1"), ("ep-1-0123abcd", "line 2"),
        ("ep-1-89abcdef", "other worker"), ("ep-1-89abcdef", "bad \ufffd byte")]
    assert process_lines("ep-2", 10, tmp_path) == []
