"""`podq logs ENDPOINT [--worker W] [--job J] [-f] [--tail N] [--since S]`: an endpoint's worker logs.

By default the lines come from the gateway (GET /v1/endpoints/{id}/logs, the admin key), for
every backend: what podq-runtime workers ship to Redis (worker/log_shipper.py), each line with
its time, worker and job. `-f` follows over Server-Sent Events and, when the connection drops,
resumes after the last line received (Last-Event-ID). The gateway is --url (default
$PODQ_ENDPOINT_BASE_URL, else http://127.0.0.1:8000), the key --api-key (default $PODQ_API_KEY),
as for `podq endpoint`.

`--backend` reads a backend's own logs instead: boot and crash output that never reached Redis,
and the output of RunPod-protocol workers (their SDK runs the handler, podq's shipper does not):

    docker      the endpoint's containers (PODQ_DOCKER_* and DOCKER_HOST), stopped ones included
    swarm       its services, asked of a manager
    kubernetes  its pods (PODQ_K8S_NAMESPACE and the kubeconfig), ended ones included, and for a
                pod whose container never started, the reason
    process     the files the process backend writes its workers' stdout and stderr to
                (<log dir>/<worker id>.log; the log dir is the scaler's, from $PODQ_REDIS_URL,
                or --log-dir), newest file last

Backend lines are `worker | line`, merged across workers oldest first where the engine has
timestamps. A flag that does not apply to where the lines come from is refused, not ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import msgspec

from scaler.backends.base import BackendError
from scaler.backends.docker import DockerBackend, DockerOptions
from scaler.backends.kubernetes import KubernetesBackend
from scaler.backends.kubernetes_pods import KubernetesOptions
from scaler.backends.process import ProcessBackend
from scaler.backends.swarm import SwarmBackend
from serverless.admin import AdminClient
from serverless.client import protocol
from serverless.client.events import SSEDecoder
from serverless.errors import PodqError
from serverless.settings import load_settings

BACKENDS = {"docker": DockerBackend, "swarm": SwarmBackend, "kubernetes": KubernetesBackend}
WORKERS = {"docker": "containers", "swarm": "services", "kubernetes": "pods",
           "process": "log files"}
# flags that apply to the gateway's lines only: (dest, flag, why)
GATEWAY_ONLY = (("job", "--job", "backend logs carry no job ids"), ("follow", "-f", ""),
                ("since", "--since", ""), ("url", "--url", ""), ("api_key", "--api-key", ""))
RECONNECTS = protocol.STREAM_RECONNECTS


def build_parser() -> argparse.ArgumentParser:
    """The flags of `podq logs`."""
    p = argparse.ArgumentParser(prog="podq logs", description="Show an endpoint's worker logs.")
    p.add_argument("endpoint", help="endpoint id")
    p.add_argument("--tail", type=int, default=100, help="lines (default 100; with --backend, per worker)")
    p.add_argument("--worker", help="only this worker's lines")
    p.add_argument("--job", help="only this job's lines")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines as they come")
    p.add_argument("--since", help="lines after this line id, or from this epoch ms on")
    p.add_argument("--url", help="the gateway (default $PODQ_ENDPOINT_BASE_URL, else http://127.0.0.1:8000)")
    p.add_argument("--api-key", help="the admin key (default $PODQ_API_KEY)")
    p.add_argument("--backend", choices=[*sorted(BACKENDS), "process"],
                   help="read the backend's own logs (boot and crash output) instead of the gateway's")
    p.add_argument("--docker-host",
                   help="Docker engine (default: $PODQ_DOCKER_HOST, $DOCKER_HOST, the local socket)")
    p.add_argument("--namespace",
                   help="the worker pods' namespace, kubernetes backend (default: $PODQ_K8S_NAMESPACE or default)")
    p.add_argument("--log-dir", help="the process backend's log folder (default: the scaler's, "
                                     "/tmp/podq-workers-<scope of $PODQ_REDIS_URL>)")
    return p


def source(args: argparse.Namespace) -> str | None:
    """Where the lines come from: --backend, docker when only --docker-host names an engine
    (docker was the one source before the gateway's lines), else None: the gateway (pure)."""
    return args.backend or ("docker" if args.docker_host else None)


def refused_flag(args: argparse.Namespace) -> str:
    """The message for a flag given where it does nothing; '' when every flag applies (pure).
    --namespace and --docker-host are checked against the backend by engine_options."""
    backend = source(args)
    if backend is None:
        for flag, value in (("--namespace", args.namespace), ("--log-dir", args.log_dir)):
            if value:
                return f"{flag} reads a backend's own logs: add --backend (kubernetes for " \
                       "--namespace, process for --log-dir)"
        return ""
    for dest, flag, why in GATEWAY_ONLY:
        if getattr(args, dest):
            reason = f" ({why})" if why else ""
            return f"{flag} applies to the gateway's lines, not to --backend {backend}{reason}"
    if args.log_dir and backend != "process":
        return f"--log-dir applies to --backend process only, not {backend}"
    if backend == "process" and (args.docker_host or args.namespace):
        return "--docker-host and --namespace do not apply to --backend process (it reads files)"
    return ""


# ---- formatting (pure) --------------------------------------------------------------------


def format_lines(lines: list[tuple[str, str]]) -> list[str]:
    """`worker | line` rows, the worker column padded to the widest id (pure)."""
    width = max((len(worker) for worker, _ in lines), default=0)
    return [f"{worker:<{width}} | {line}" for worker, line in lines]


def format_line(line: dict[str, Any]) -> str:
    """A gateway line as `HH:MM:SS.mmm worker job | text` (UTC; `-` for no job; a log record's
    level before its text, stderr marked)."""
    ms = int(line.get("time", 0))
    clock = time.strftime("%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}"
    mark = f"[{line['level']}] " if line.get("level") else (
        "[stderr] " if line.get("stream") == "stderr" else "")
    return f"{clock} {line.get('worker', '')} {line.get('job') or '-'} | {mark}{line.get('line', '')}"


def only_worker(lines: list[tuple[str, str]], worker: str | None) -> list[tuple[str, str]]:
    """Backend lines of `worker` only (all when None)."""
    return lines if worker is None else [pair for pair in lines if pair[0] == worker]


# ---- the gateway --------------------------------------------------------------------------


def logs_path(endpoint: str, args: argparse.Namespace) -> str:
    """The /v1 path of the endpoint's logs with the query the flags ask for (pure)."""
    query = {"tail": args.tail, "worker": args.worker, "job": args.job, "since": args.since}
    given = {k: v for k, v in query.items() if v is not None}
    return f"endpoints/{quote(endpoint, safe='')}/logs?{urlencode(given)}"


def gateway_lines(client: AdminClient, endpoint: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The endpoint's lines, one JSON read."""
    return client.call("GET", logs_path(endpoint, args))["lines"]


def follow(client: AdminClient, endpoint: str, args: argparse.Namespace,
           out: Callable[[dict[str, Any]], None]) -> None:
    """Print lines as the gateway streams them, until interrupted; a dropped connection is
    resumed after the last line received (Last-Event-ID), RECONNECTS times in a row at most."""
    url = f"{client.base_url}/v1/{logs_path(endpoint, args)}"
    last_id: str | None = None
    failures = 0
    while True:
        headers = {**client.headers, "Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        try:
            for event_id, line in _events(url, headers):
                last_id, failures = event_id, 0
                out(line)
        except httpx.TransportError as e:
            failures += 1
            if failures > RECONNECTS:
                raise PodqError(f"lost the log stream at {client.base_url} {failures} times in a "
                                f"row ({e}); is the gateway up? Run the command again to resume") from e
            time.sleep(min(2.0, 0.25 * 2**failures))


def _events(url: str, headers: dict[str, str]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    timeout = httpx.Timeout(protocol.CALL_TIMEOUT_S, read=protocol.STREAM_READ_TIMEOUT_S)
    with httpx.stream("GET", url, headers=headers, timeout=timeout) as response:
        if response.status_code != 200:
            request = protocol.Request("GET", url, headers)
            protocol.raise_for_reply(request, protocol.Reply(response.status_code, response.read()))
        decoder = SSEDecoder()
        for chunk in response.iter_bytes():
            for event in decoder.feed(chunk):
                yield event.id, json.loads(event.data)


# ---- the backends -------------------------------------------------------------------------


async def read_logs(endpoint: str, tail: int, options: DockerOptions | KubernetesOptions,
                    backend_name: str = "docker") -> list[str]:
    """The endpoint's worker log lines from a container backend, formatted for the terminal.

    Args:
        endpoint: the endpoint id.
        tail: lines per worker.
        options: where the engine is (KubernetesOptions for the kubernetes backend).
        backend_name: docker (containers), swarm (services) or kubernetes (pods).

    Returns:
        One string per line, oldest first.
    """
    return format_lines(await engine_lines(endpoint, tail, options, backend_name))


async def engine_lines(endpoint: str, tail: int, options: DockerOptions | KubernetesOptions,
                       backend_name: str) -> list[tuple[str, str]]:
    """(worker, line) pairs from a container backend's engine."""
    backend = BACKENDS[backend_name](options)
    try:
        return await backend.logs(endpoint, tail=tail)
    finally:
        await backend.close()


def process_lines(endpoint: str, tail: int, log_dir: Path) -> list[tuple[str, str]]:
    """(worker, line) pairs from the process backend's files of the endpoint's workers (the
    scaler names them `<endpoint>-<8 hex>`): the last `tail` lines of each, oldest file first."""
    own = re.compile(re.escape(endpoint) + r"-[0-9a-f]{8}\.log")
    files = sorted((f for f in log_dir.glob("*.log") if own.fullmatch(f.name)),
                   key=lambda f: f.stat().st_mtime)
    pairs: list[tuple[str, str]] = []
    for path in files:
        with path.open("rb") as f:
            last = deque(f, maxlen=tail)
        pairs += [(path.stem, raw.decode("utf-8", "replace").rstrip("\r\n")) for raw in last]
    return pairs


def process_log_dir(args: argparse.Namespace) -> Path:
    """--log-dir, else the folder the scaler's process backend writes to."""
    if args.log_dir:
        return Path(args.log_dir)
    return ProcessBackend(load_settings().redis_url).log_dir


def engine_options(args: argparse.Namespace) -> DockerOptions | KubernetesOptions:
    """The backend's options from its environment, with the flags over them.

    Raises:
        BackendError: a flag of another backend's engine (it would do nothing), or a bad value.
    """
    backend = source(args) or "docker"
    if backend == "kubernetes":
        if args.docker_host:
            raise BackendError("--docker-host does not apply to --backend kubernetes (it reads the kubeconfig)")
        options = KubernetesOptions.from_env()
        return msgspec.structs.replace(options, namespace=args.namespace) if args.namespace else options
    if args.namespace:
        raise BackendError(f"--namespace applies to --backend kubernetes only, not {backend}")
    docker = DockerOptions.from_env()
    return msgspec.structs.replace(docker, host=args.docker_host) if args.docker_host else docker


def where(backend_name: str, args: argparse.Namespace) -> str:
    """Where the workers were looked for, for the "none found" message."""
    if backend_name == "process":
        return str(process_log_dir(args))
    options = engine_options(args)
    if isinstance(options, KubernetesOptions):
        return f"namespace {options.namespace} of the cluster"
    return BACKENDS[backend_name](options).host  # type: ignore[arg-type]


def backend_lines(args: argparse.Namespace, backend: str) -> list[tuple[str, str]]:
    """The (worker, line) pairs of a backend's own logs."""
    if backend == "process":
        return process_lines(args.endpoint, args.tail, process_log_dir(args))
    options = engine_options(args)
    return asyncio.run(engine_lines(args.endpoint, args.tail, options, backend))


# ---- main ---------------------------------------------------------------------------------


def _print_line(line: dict[str, Any]) -> None:
    print(format_line(line), flush=True)


def _from_gateway(args: argparse.Namespace) -> None:
    client = AdminClient.create(args.url, args.api_key)
    if args.follow:
        follow(client, args.endpoint, args, _print_line)
        return
    lines = gateway_lines(client, args.endpoint, args)
    if not lines:
        print(f"podq logs: no lines for endpoint {args.endpoint!r} at {client.base_url}; workers "
              "that never started and RunPod-protocol workers ship none: read their backend's own "
              "logs with --backend process|docker|swarm|kubernetes", file=sys.stderr)
    for line in lines:
        _print_line(line)


def _from_backend(args: argparse.Namespace, backend: str) -> None:
    lines = only_worker(backend_lines(args, backend), args.worker)
    if not lines:
        print(f"podq logs: no worker {WORKERS[backend]} for endpoint {args.endpoint!r} on "
              f"{where(backend, args)}", file=sys.stderr)
    for line in format_lines(lines):
        print(line)


def main(argv: list[str]) -> None:
    """Entry point of `podq logs`."""
    args = build_parser().parse_args(argv)
    if problem := refused_flag(args):
        sys.exit(f"podq logs: {problem}")
    backend = source(args)
    try:
        if backend is None:
            _from_gateway(args)
        else:
            _from_backend(args, backend)
    except (BackendError, PodqError) as e:
        sys.exit(f"podq logs: {e}")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main(sys.argv[1:])
