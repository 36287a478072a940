"""`podq worker --runpod -- CMD...` and `podq worker-env`: unmodified RunPod workers by hand.

    podq worker --runpod --endpoint my-ep -- python -u handler.py
        runs CMD (a worker that calls runpod.serverless.start) with RunPod's env pointing at
        the gateway, in its own process group; SIGTERM / Ctrl-C reach it (the SDK drains), and
        when it exits whatever is left of its group is killed (its ping child outlives it).
    podq worker-env --endpoint my-ep [--gpu "NVIDIA L4"] > worker.env
        prints those env lines (a new worker key minted through the admin API) for
        `docker run --env-file worker.env IMAGE`.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import uuid

from serverless.errors import ConfigError, PodqError
from serverless.process_group import kill_group, send
from serverless.runpod_protocol import FORBIDDEN_ENV, worker_env
from serverless.settings import load_settings


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", help="endpoint id (default: $PODQ_ENDPOINT_ID)")
    parser.add_argument("--url", help="the gateway as the worker reaches it (default: $PODQ_GATEWAY_URL)")
    parser.add_argument("--worker-id", help="RUNPOD_POD_ID (default: <endpoint>-<random>; unique per start)")
    parser.add_argument("--gpu", default="", help="GPU name for the ?gpu= label (cosmetic)")


def _settings_or_exit(prog: str):  # noqa: ANN202
    try:
        return load_settings()
    except ConfigError as e:
        sys.exit(f"{prog}: {e}")


def _env(args: argparse.Namespace, key: str, prog: str) -> dict[str, str]:
    settings = _settings_or_exit(prog)
    endpoint = args.endpoint or settings.endpoint_id
    if not endpoint:
        sys.exit(f"{prog}: no endpoint: pass --endpoint ID or set PODQ_ENDPOINT_ID")
    worker_id = args.worker_id or f"{endpoint}-{uuid.uuid4().hex[:8]}"
    return worker_env(args.url or settings.gateway_url, endpoint, worker_id, key,
                      ping_ms=settings.runpod_ping_ms, gpu_label=args.gpu)


def run_main(argv: list[str]) -> None:
    """`podq worker --runpod [flags] -- CMD...`: run one RunPod worker in the foreground."""
    prog = "podq worker --runpod"
    before, command = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog=prog, description="Run an unmodified RunPod worker against podq.")
    parser.add_argument("--runpod", action="store_true", required=True, help="speak RunPod's worker protocol")
    parser.add_argument("--api-key", help="worker or admin key (default: $RUNPOD_AI_API_KEY, else $PODQ_API_KEY)")
    _common(parser)
    args = parser.parse_args(before)
    if not command:
        sys.exit(f"{prog}: give the worker's command after --, e.g. "
                 "podq worker --runpod --endpoint my-ep -- python -u handler.py")
    key = args.api_key or os.environ.get("RUNPOD_AI_API_KEY") or os.environ.get("PODQ_API_KEY")
    if not key:
        sys.exit(f"{prog}: no key: pass --api-key, or set RUNPOD_AI_API_KEY to a worker key "
                 "(`podq keys create --worker --endpoint ID`)")
    env = {k: v for k, v in os.environ.items() if k not in FORBIDDEN_ENV}
    env.update(_env(args, key, prog))
    try:
        proc = subprocess.Popen(command, env=env, start_new_session=True)
    except OSError as e:
        sys.exit(f"{prog}: could not start {command[0]!r}: {e}")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _f: send(proc.pid, s))
    try:
        code = proc.wait()
    finally:
        kill_group(proc.pid)
    sys.exit(code if code >= 0 else 128 - code)


def env_main(argv: list[str]) -> None:
    """`podq worker-env --endpoint ID [--gpu NAME]`: RunPod's env lines for `docker run --env-file`."""
    prog = "podq worker-env"
    parser = argparse.ArgumentParser(prog=prog, description="Print the env that points an unmodified "
                                     "RunPod worker image at this podq (docker run --env-file).")
    _common(parser)
    parser.add_argument("--key", help="use this worker key instead of minting a new one")
    parser.add_argument("--admin-url", help="the gateway for the admin API (default: $PODQ_ENDPOINT_BASE_URL)")
    parser.add_argument("--api-key", help="the admin key that mints the worker key (default: $PODQ_API_KEY)")
    args = parser.parse_args(argv)
    key = args.key
    if not key:
        from serverless.admin import AdminClient

        endpoint = args.endpoint or _settings_or_exit(prog).endpoint_id
        try:
            client = AdminClient.create(args.admin_url, args.api_key)
            key = client.create_key(f"worker-env for {endpoint}", [endpoint] if endpoint else [], worker=True)["key"]
        except PodqError as e:
            sys.exit(f"{prog}: could not mint a worker key ({e}); pass --key or fix --admin-url/--api-key")
    for name, value in _env(args, key, prog).items():
        print(f"{name}={value}")
