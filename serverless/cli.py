"""`podq`: the command line. Each subcommand parses its flags and calls one function."""

from __future__ import annotations

import argparse
import sys


def _worker(argv: list[str]) -> None:
    if "--runpod" in (argv[: argv.index("--")] if "--" in argv else argv):
        from serverless.runpod_worker_cli import run_main

        run_main(argv)
        return
    from worker.files import main

    main(argv)


def _worker_env(argv: list[str]) -> None:
    from serverless.runpod_worker_cli import env_main

    env_main(argv)


def _batch(argv: list[str]) -> None:
    from serverless.batches.cli import main

    main(argv)


def _deploy(argv: list[str]) -> None:
    from serverless.deploy.cli import main

    main(argv)


def _dev(argv: list[str]) -> None:
    from serverless.dev import main

    main(argv)


def _gateway(argv: list[str]) -> None:
    from serverless.gateway.cli import main

    main(argv)


def _scaler(argv: list[str]) -> None:
    from scaler.cli import main

    main(argv)


def _endpoint(argv: list[str]) -> None:
    from serverless.admin_cli import endpoint_main

    endpoint_main(argv)


def _template(argv: list[str]) -> None:
    from serverless.admin_cli import template_main

    template_main(argv)


def _logs(argv: list[str]) -> None:
    from scaler.logs_cli import main

    main(argv)


def _keys(argv: list[str]) -> None:
    from serverless.keys_cli import main

    main(argv)


COMMANDS = {
    "batch": (_batch, "batch jobs: podq batch submit FILE --endpoint ID [--wait] | status|results|"
              "cancel|retry|delete ID | list"),
    "deploy": (_deploy, "print the control plane for a cluster: podq deploy kubernetes "
               "[--namespace N] [--redis-url U] > podq.yaml"),
    "dev": (_dev, "gateway + Redis + workers for one handler: podq dev handler.py"),
    "endpoint": (_endpoint, "manage endpoints: podq endpoint create|list|get|update|delete|pause|"
                 "resume|scale-to-zero"),
    "gateway": (_gateway, "run the HTTP gateway: podq gateway [--host H] [--port P]"),
    "keys": (_keys, "API keys: podq keys create [--endpoint ID] | list | revoke DIGEST"),
    "logs": (_logs, "worker logs of an endpoint, every backend: podq logs ENDPOINT [--worker W] [--job J] [-f] "
               "[--backend docker|swarm|kubernetes|process]"),
    "scaler": (_scaler, "run the autoscaler: podq scaler [--backends process,docker,swarm,kubernetes]"),
    "template": (_template, "manage templates: podq template create|list|get|update|delete"),
    "worker": (_worker, "run a handler file as a worker: podq worker handler.py --endpoint ID; "
               "an unmodified RunPod worker: podq worker --runpod --endpoint ID -- python -u handler.py"),
    "worker-env": (_worker_env, "RunPod's env for running a RunPod worker image by hand: "
                   "podq worker-env --endpoint ID [--gpu NAME] > worker.env"),
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="podq", description="Self-hosted RunPod-style serverless.")
    parser.add_argument("command", choices=sorted(COMMANDS), help="; ".join(
        f"{name}: {text}" for name, (_, text) in sorted(COMMANDS.items())))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        sys.exit(0 if argv else 2)
    args = parser.parse_args(argv[:1])
    COMMANDS[args.command][0](argv[1:])


if __name__ == "__main__":
    main()
