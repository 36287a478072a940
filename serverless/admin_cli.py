"""`podq endpoint ...` and `podq template ...`: the /v1 admin API from a shell.

    podq template create --name echo --handler examples/echo.py
    podq endpoint create --name echo --template-id tpl-1a2b3c4d5e --workers-max 2
    podq endpoint create --name echo --template-id tpl-1a2b3c4d5e --update-if-exists
    podq endpoint list --label team:ml --label prod
    podq endpoint pause ep-1a2b3c4d5e

`list` prints a table, every other command the record as JSON. Options left out are left to
the server's defaults (create) or unchanged (update). An error prints the gateway's message
and exits with status 1. The gateway is --url (default $PODQ_ENDPOINT_BASE_URL, else
http://127.0.0.1:8000; a `/v2` suffix is dropped); the key is --api-key (default $PODQ_API_KEY).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from serverless.admin import AdminClient
from serverless.errors import PodqError

# (flag, type, help); the field is the flag without dashes, with `_` for `-`
Option = tuple[str, Any, str]
ENDPOINT_OPTIONS: tuple[Option, ...] = (
    ("--name", str, "a readable name"),
    ("--template-id", str, "the template its workers run"),
    ("--gpu-ids", str, "ANY (default) or GPU pool ids / GPU names, comma-separated"),
    ("--gpu-count", int, "GPUs per worker (default 1)"),
    ("--workers-min", int, "workers kept running even when idle (default 0)"),
    ("--workers-max", int, "the most workers at once (default 3)"),
    ("--idle-timeout", int, "seconds an idle worker above the minimum stays (default 5)"),
    ("--scaler-type", str, "QUEUE_DELAY (default) or REQUEST_COUNT"),
    ("--scaler-value", float, "QUEUE_DELAY: seconds a job may wait (default 4); "
                              "REQUEST_COUNT: jobs per worker"),
    ("--execution-timeout-ms", int, "a job's longest run in ms (default 600000)"),
    ("--cpus", float, "CPU cores per worker, e.g. 0.5 or 4 (container backends; default 0: no limit)"),
    ("--memory-gb", float, "memory per worker in GB (container backends; default 0: no limit)"),
    ("--flashboot", bool, "RunPod's FlashBoot: refused (podq has no warm paused workers; "
                          "use --workers-min or a longer --idle-timeout)"),
    ("--labels", dict, "a label KEY=VALUE (repeat the option for more)"),
    ("--backend", str, "process (default), docker, swarm or kubernetes"),
    ("--paused", bool, "paused: no workers, jobs stay queued"),
    ("--rate-limits", str, "gateway rate limits: runpod, a spec like run=500/10,runsync=1000/10, "
                           "or off; '' for the gateway's default (PODQ_RATE_LIMITS)"),
    ("--webhook", str, "a URL POSTed every job's result when the job ends (besides a request's own)"),
)
TEMPLATE_OPTIONS: tuple[Option, ...] = (
    ("--name", str, "a readable name"),
    ("--image-name", str, "the worker image (docker, kubernetes backends)"),
    ("--docker-start-cmd", str, "the command run in it (default: python -m worker HANDLER)"),
    ("--handler", str, "the handler file (process: a host path; docker: a path in the image)"),
    ("--env", dict, "an environment variable KEY=VALUE (repeat the option for more)"),
    ("--container-disk-in-gb", int, "the container's disk (default 10)"),
    ("--volume-in-gb", int, "a volume's size (default 0: none)"),
    ("--volume-mount-path", str, "where the volume is mounted"),
    ("--ports", str, "ports in RunPod's form, e.g. 8888/http,22/tcp"),
    ("--is-serverless", bool, "RunPod's flag (default true)"),
)
ID_OPTION: Option = ("--id", str, "the new record's id (default: generated)")
UPSERT_HELP = ("if an endpoint with --id (when given), else with --name, exists: update it with the "
               "options given instead of creating another")
CREATE_REQUIRED = {"endpoint": ("--name", "--template-id"), "template": ("--name",)}


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE; write e.g. MODEL=llama")
    return key, value


def _add_option(p: argparse.ArgumentParser, option: Option, required: bool) -> None:
    flag, kind, text = option
    dest = flag[2:].replace("-", "_")
    common: dict[str, Any] = {"dest": dest, "help": text, "default": argparse.SUPPRESS}
    if kind is bool:
        p.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
    elif kind is dict:
        p.add_argument(flag, type=_key_value, action="append", metavar="KEY=VALUE", **common)
    else:
        p.add_argument(flag, type=kind, required=required, **common)


def _fields(args: argparse.Namespace, options: Sequence[Option]) -> dict[str, Any]:
    """The fields given on the command line (KEY=VALUE lists become dicts)."""
    out: dict[str, Any] = {}
    for flag, kind, _ in options:
        dest = flag[2:].replace("-", "_")
        if hasattr(args, dest):
            value = getattr(args, dest)
            out[dest] = dict(value) if kind is dict else value
    return out


def _connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None,
                   help="the gateway (default $PODQ_ENDPOINT_BASE_URL, else http://127.0.0.1:8000)")
    p.add_argument("--api-key", default=None, help="the admin key (default $PODQ_API_KEY)")


# ---- output ------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows under headers, each column as wide as its widest cell."""
    cells = [list(headers), *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def endpoint_table(records: list[dict[str, Any]]) -> str:
    """`podq endpoint list`: one line per endpoint."""
    if not records:
        return "no endpoints; create one with: podq endpoint create --name N --template-id T"
    headers = ("ID", "NAME", "STATUS", "TEMPLATE", "WORKERS", "SCALER", "GPUS", "BACKEND", "VER")
    rows = [
        (e["id"], e["name"], e["status"] + (" (paused)" if e["paused"] else ""), e["template_id"],
         f"{e['workers_min']}..{e['workers_max']}", f"{e['scaler_type']} {e['scaler_value']:g}",
         f"{e['gpu_count']} x {e['gpu_ids']}", e["backend"], e["version"])
        for e in records
    ]
    return table(headers, rows)


def template_table(records: list[dict[str, Any]]) -> str:
    """`podq template list`: one line per template."""
    if not records:
        return "no templates; create one with: podq template create --name N --handler FILE"
    rows = [(t["id"], t["name"], t["image_name"] or "-", t["handler"] or "-") for t in records]
    return table(("ID", "NAME", "IMAGE", "HANDLER"), rows)


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


# ---- commands ----------------------------------------------------------------------------

Run = Callable[[AdminClient, argparse.Namespace], str]


def _endpoint_commands() -> dict[str, tuple[Run, str]]:
    opts = ENDPOINT_OPTIONS
    return {
        "create": (lambda c, a: _json(c.create_endpoint(_fields(a, (*opts, ID_OPTION)),
                                                        a.update_if_exists)),
                   "create an endpoint"),
        "list": (lambda c, a: endpoint_table(c.endpoints(a.label or None)),
                 "every endpoint (or those with --label), as a table"),
        "get": (lambda c, a: _json(c.endpoint(a.id)), "one endpoint, as JSON"),
        "update": (lambda c, a: _json(c.update_endpoint(a.id, _fields(a, opts))),
                   "change the settings given"),
        "delete": (lambda c, a: _json(c.delete_endpoint(a.id)), "delete an endpoint"),
        "pause": (lambda c, a: _json(c.endpoint_action(a.id, "pause")),
                  "no workers; jobs stay queued"),
        "resume": (lambda c, a: _json(c.endpoint_action(a.id, "resume")),
                   "undo pause and scale-to-zero"),
        "scale-to-zero": (lambda c, a: _json(c.endpoint_action(a.id, "scale-to-zero")),
                          "stop every worker now; the next job starts one"),
    }


def _template_commands() -> dict[str, tuple[Run, str]]:
    opts = TEMPLATE_OPTIONS
    return {
        "create": (lambda c, a: _json(c.create_template(_fields(a, (*opts, ID_OPTION)))),
                   "create a template"),
        "list": (lambda c, a: template_table(c.templates()), "every template, as a table"),
        "get": (lambda c, a: _json(c.template(a.id)), "one template, as JSON"),
        "update": (lambda c, a: _json(c.update_template(a.id, _fields(a, opts))),
                   "change the fields given (endpoints using it roll their workers)"),
        "delete": (lambda c, a: _json(c.delete_template(a.id)), "delete an unused template"),
    }


def build_parser(
    kind: str, commands: dict[str, tuple[Run, str]], options: Sequence[Option]
) -> argparse.ArgumentParser:
    """`podq <kind> <command> ...` with the options each command takes."""
    parser = argparse.ArgumentParser(prog=f"podq {kind}", description=f"Manage {kind}s (admin key)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, text) in commands.items():
        p = sub.add_parser(name, help=text, description=text)
        _connection(p)
        if name not in ("create", "list"):
            p.add_argument("id", help=f"the {kind}'s id")
        if name == "update":
            for option in options:
                _add_option(p, option, required=False)
        if name == "create":
            for option in (*options, ID_OPTION):
                _add_option(p, option, required=option[0] in CREATE_REQUIRED[kind])
        if kind == "endpoint":
            _endpoint_flags(p, name)
    return parser


def _endpoint_flags(p: argparse.ArgumentParser, command: str) -> None:
    if command == "create":
        p.add_argument("--update-if-exists", action="store_true", help=UPSERT_HELP)
    if command == "list":
        p.add_argument("--label", action="append", metavar="KEY[:VALUE]",
                       help="only endpoints with this label (KEY alone: any value); repeat: all must match")


def _main(
    kind: str, commands: dict[str, tuple[Run, str]], options: Sequence[Option], argv: list[str]
) -> None:
    args = build_parser(kind, commands, options).parse_args(argv)
    client = AdminClient.create(args.url, args.api_key)
    try:
        print(commands[args.command][0](client, args))
    except PodqError as e:
        sys.exit(f"podq {kind} {args.command}: {e}")


def endpoint_main(argv: list[str]) -> None:
    """`podq endpoint create|list|get|update|delete|pause|resume|scale-to-zero`."""
    _main("endpoint", _endpoint_commands(), ENDPOINT_OPTIONS, argv)


def template_main(argv: list[str]) -> None:
    """`podq template create|list|get|update|delete`."""
    _main("template", _template_commands(), TEMPLATE_OPTIONS, argv)
