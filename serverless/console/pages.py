"""The console's HTML, built as Python strings: every value that comes from a user goes
through `e()` (html.escape, quotes included) on its way in.

Why not a template engine: podq's dependencies have none (pyproject: no Jinja2 or Mako), and
the pages are a handful of tables and forms; one more dependency for them is not worth it.
The rule that keeps this safe is local and checkable: text and attribute values are
interpolated only as `e(value)`; the only unescaped interpolations are fragments this module
built itself (other functions' return values) and numbers. Endpoint names, job inputs and
outputs, errors, labels and log lines are all user data and are escaped. Pages load no inline
script (the Content-Security-Policy routes.py sends forbids it); live cells carry a `data-k`
key whose text the console script replaces with `textContent`, never HTML.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from urllib.parse import quote

import msgspec

from serverless.console import numbers as n
from serverless.console.history import Point
from serverless.metrics_store import EndpointFigures
from serverless.worker_logs import LogLine
from serverless.model import (
    ApiKey, Chunk, EndpointConfig, JobRecord, Status, Template, TERMINAL_STATUSES, RETRYABLE_STATUSES,
    WorkerBeat,
)

BASE = "/console"
STATUSES = tuple(Status)


def e(value: object) -> str:
    """Text or attribute value, escaped (quotes too)."""
    return html.escape(str(value), quote=True)


def u(value: str) -> str:
    """A path segment, percent-encoded (ids are [A-Za-z0-9_.:-] already; this is defence)."""
    return quote(value, safe="")


def page(title: str, body: str, *, signed_in: bool = True, csrf: str = "", live: str = "") -> str:
    """The frame every page shares: nav, sign-out form, the stylesheet and the script."""
    nav = ""
    if signed_in:
        nav = (f'<nav><a href="{BASE}/">Endpoints</a> <a href="{BASE}/jobs">Jobs</a> '
               f'<a href="{BASE}/templates">Templates</a> <a href="{BASE}/keys">API keys</a>'
               f'{form("sign-out", "Sign out", csrf)}</nav>')
    live_attr = f' data-live="{e(live)}"' if live else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<link rel="icon" href="data:,">'
            f'<title>{e(title)} · podq</title><link rel="stylesheet" href="{BASE}/static/console.css">'
            f'<script src="{BASE}/static/console.js" defer></script></head>'
            f'<body{live_attr}><header><b>podq</b> console{nav}</header><main>'
            f'<h1>{e(title)}</h1>{body}</main></body></html>')


def form(action: str, label: str, csrf: str, *, back: str = "", danger: bool = False,
         fields: str = "") -> str:
    """A one-button form: a POST to BASE/`action` with the CSRF token (works without script)."""
    back_field = f'<input type="hidden" name="next" value="{e(back)}">' if back else ""
    cls = ' class="danger"' if danger else ""
    return (f'<form method="post" action="{BASE}/{e(action)}">'
            f'<input type="hidden" name="csrf" value="{e(csrf)}">{back_field}{fields}'
            f'<button{cls}>{e(label)}</button></form>')


def cell(key: str, text: str) -> str:
    """A table cell the live script keeps up to date (`key` as numbers.live names it)."""
    return f'<td data-k="{e(key)}">{e(text)}</td>'


def table(head: Sequence[str], rows: Iterable[str], empty: str) -> str:
    rows = list(rows)
    if not rows:
        return f'<p class="empty">{e(empty)}</p>'
    th = "".join(f"<th>{e(h)}</th>" for h in head)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def when(ms: int | None) -> str:
    if not ms:
        return n.DASH
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d} UTC"


def duration(ms: float | None) -> str:
    return n.seconds_text(None if ms is None else ms / 1000)


def pretty(raw: msgspec.Raw | bytes | None) -> str:
    """A JSON payload indented for reading (escaped by the caller)."""
    if raw is None:
        return n.DASH
    try:
        return msgspec.json.format(bytes(raw), indent=2).decode(errors="replace")
    except msgspec.DecodeError:
        return bytes(raw).decode(errors="replace")


def notice(text: str, kind: str = "info") -> str:
    return f'<p class="notice {e(kind)}" role="status">{e(text)}</p>' if text else ""


# ---- sign-in -----------------------------------------------------------------------------


def sign_in(error: str = "", back: str = "") -> str:
    body = (f'{notice(error, "error")}<form method="post" action="{BASE}/sign-in" class="sign-in">'
            f'<input type="hidden" name="next" value="{e(back)}">'
            f'<label>Admin key <input type="password" name="key" autocomplete="current-password" '
            f'required autofocus></label><button>Sign in</button></form>'
            f'<p>The gateway\'s admin key (PODQ_API_KEY). The browser keeps a signed session '
            f'cookie, never the key.</p>')
    return page("Sign in", body, signed_in=False)


# ---- endpoints ---------------------------------------------------------------------------


def _actions(ep: str, csrf: str, back: str) -> str:
    actions = (("pause", "Pause", False), ("resume", "Resume", False),
               ("scale-to-zero", "Scale to zero", False), ("purge", "Purge queue", True))
    return "".join(form(f"endpoints/{u(ep)}/{a}", label, csrf, back=back, danger=d)
                   for a, label, d in actions)


def endpoint_row(ep: str, config: EndpointConfig | None, cells: dict[str, str], csrf: str) -> str:
    name = config.name if config else ep
    status = (config.status.value + (" (paused)" if config.paused else "")) if config else "unregistered"
    live = "".join(cell(f"{ep}.{k}", cells.get(f"{ep}.{k}", n.DASH)) for k in (
        "queued", "in_progress", "workers", "rate", "delay_p50", "delay_p90", "exec_p50", "exec_p90"))
    return (f'<tr><td><a href="{BASE}/endpoints/{u(ep)}">{e(name)}</a>'
            f'<div class="id">{e(ep)}</div></td><td>{e(status)}</td>{live}'
            f'<td class="actions">{_actions(ep, csrf, f"{BASE}/")}</td></tr>')


def endpoints(figures: Sequence[EndpointFigures], configs: dict[str, EndpointConfig],
              cells: dict[str, str], csrf: str, message: str = "") -> str:
    rows = [endpoint_row(f.endpoint, configs.get(f.endpoint), cells, csrf) for f in figures]
    head = ("Endpoint", "Status", "Queued", "In progress", "Workers", "Jobs/s", "Delay p50",
            "Delay p90", "Execution p50", "Execution p90", "Actions")
    body = notice(message) + table(head, rows, "No endpoints yet: create one with `podq endpoint create`.")
    return page("Endpoints", body, csrf=csrf, live=f"{BASE}/live/numbers")


# ---- one endpoint ------------------------------------------------------------------------


def chart(title: str, points: Sequence[Point], field: str, width: int = 720, height: int = 120) -> str:
    """A line chart of one field over the points, as inline SVG (no chart library)."""
    if len(points) < 2:
        return (f'<figure><figcaption>{e(title)}</figcaption><p class="empty">'
                f'Not enough history yet: a point is kept each minute.</p></figure>')
    values = [getattr(p, field) for p in points]
    t0, t1 = points[0].minute_ms, points[-1].minute_ms
    top = max(max(values), 1)
    xy = " ".join(f"{(p.minute_ms - t0) / max(t1 - t0, 1) * width:.1f},"
                  f"{height - v / top * (height - 4):.1f}" for p, v in zip(points, values))
    return (f'<figure><figcaption>{e(title)} (max {top}, {e(when(t0))} to {e(when(t1))})'
            f'</figcaption><svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'role="img" aria-label="{e(title)}"><polyline fill="none" stroke="currentColor" '
            f'stroke-width="2" points="{xy}"/></svg></figure>')


def _gpus(beat: WorkerBeat) -> str:
    if not beat.gpus:
        return n.DASH
    return "<br>".join(f"{e(g.name)} · {g.memory_used_mb}/{g.memory_total_mb} MB · "
                       f"{g.utilization_pct}%" for g in beat.gpus)


def worker_row(beat: WorkerBeat, now: int) -> str:
    jobs = " ".join(f'<a href="{BASE}/jobs/{u(j)}">{e(j)}</a>' for j in beat.jobs) or n.DASH
    uptime = duration(now - beat.started_at) if beat.started_at else n.DASH
    state = beat.state.value + (f" ({beat.reason})" if beat.reason else "")
    return (f"<tr><td>{e(beat.id)}</td><td>{e(state)}</td><td>{_gpus(beat)}</td>"
            f"<td>{e(uptime)}</td><td>{jobs}</td></tr>")


def percentiles(f: EndpointFigures) -> str:
    rows = [("Delay", f.delay), ("Execution", n.execution(f)), ("Cold start", n.cold_start(f))]
    body = [f"<tr><td>{e(name)}</td>" + "".join(
        f"<td>{e(n.seconds_text(n.quantile(h, q)))}</td>" for q in (0.5, 0.9, 0.98))
        + f"<td>{h.count if h else 0}</td></tr>" for name, h in rows]
    return table(("", "p50", "p90", "p98", "count"), body, "")


def endpoint(ep: str, config: EndpointConfig | None, f: EndpointFigures, cells: dict[str, str],
             beats: Sequence[WorkerBeat], history: Sequence[Point], logs: Sequence[LogLine],
             logs_next: str, csrf: str, now: int, message: str = "") -> str:
    back = f"{BASE}/endpoints/{u(ep)}"
    summary = table(("Queued", "In progress", "Workers", "Jobs/s"), [
        "<tr>" + "".join(cell(f"{ep}.{k}", cells.get(f"{ep}.{k}", n.DASH))
                         for k in ("queued", "in_progress", "workers", "rate")) + "</tr>"], "")
    workers = table(("Worker", "State", "GPU (name · memory · utilisation)", "Uptime", "Jobs"),
                    (worker_row(b, now) for b in sorted(beats, key=lambda b: b.id)),
                    "No worker has sent a heartbeat.")
    status = config.status.value if config else "unregistered"
    body = (f'{notice(message)}<p class="id">{e(ep)} · {e(status)}</p>'
            f'<div class="actions">{_actions(ep, csrf, back)}'
            f'{form(f"endpoints/{u(ep)}/retry-failed", "Retry failed jobs", csrf, back=back)}</div>'
            f'<h2>Now</h2>{summary}<h2>Percentiles</h2>{percentiles(f)}'
            f'<h2>Last 24 h</h2>{chart("Queued jobs", history, "queued")}'
            f'{chart("Workers", history, "workers")}'
            f'<h2>Workers</h2>{workers}'
            f'<h2>Jobs</h2><p><a href="{BASE}/jobs?endpoint={u(ep)}">Recent jobs of this endpoint</a></p>'
            f'<h2>Logs</h2>{log_block(logs, f"{BASE}/live/logs/{u(ep)}?after={u(logs_next)}")}')
    name = config.name if config else ep
    return page(f"Endpoint {name}", body, csrf=csrf, live=f"{BASE}/live/numbers?endpoint={u(ep)}")


# ---- jobs --------------------------------------------------------------------------------


def job_row(job: JobRecord) -> str:
    return (f'<tr><td><a href="{BASE}/jobs/{u(job.id)}">{e(job.id)}</a></td>'
            f'<td><a href="{BASE}/endpoints/{u(job.endpoint)}">{e(job.endpoint)}</a></td>'
            f'<td class="status {e(job.status.value)}">{e(job.status.value)}</td>'
            f'<td>{e(when(job.submitted_at))}</td></tr>')


def _options(values: Iterable[str], chosen: str, blank: str) -> str:
    opts = [f'<option value="">{e(blank)}</option>']
    opts += [f'<option value="{e(v)}"{" selected" if v == chosen else ""}>{e(v)}</option>'
             for v in values]
    return "".join(opts)


def jobs(endpoint_ids: Sequence[str], chosen: str, status: str, found: Sequence[JobRecord],
         csrf: str, message: str = "") -> str:
    search = (f'<form method="get" action="{BASE}/jobs" class="filters">'
              f'<label>Endpoint <select name="endpoint">{_options(endpoint_ids, chosen, "choose")}'
              f'</select></label><label>Status <select name="status">'
              f'{_options(STATUSES, status, "any")}</select></label>'
              f'<label>Job id <input name="id" size="40"></label><button>Show</button></form>')
    listing = ""
    if chosen:
        back = f"{BASE}/jobs?endpoint={u(chosen)}"
        listing = (form(f"endpoints/{u(chosen)}/retry-failed", "Retry failed jobs", csrf, back=back)
                   + table(("Job", "Endpoint", "Status", "Submitted"), map(job_row, found),
                           "No recent jobs match."))
    return page("Jobs", notice(message) + search + listing, csrf=csrf)


def _chunk_item(chunk: Chunk) -> str:
    return f'<li data-cursor="{e(chunk.cursor)}">{e(bytes(chunk.output).decode(errors="replace"))}</li>'


def job(record: JobRecord, chunks: Sequence[Chunk], logs: Sequence[LogLine], logs_next: str,
        csrf: str, now: int, message: str = "") -> str:
    back = f"{BASE}/jobs/{u(record.id)}"
    delay = (record.started_at or now) - record.submitted_at if record.submitted_at else None
    run = ((record.finished_at or now) - record.started_at) if record.started_at else None
    facts = [("Endpoint", f'<a href="{BASE}/endpoints/{u(record.endpoint)}">{e(record.endpoint)}</a>'),
             ("Status", f'<span id="job-status" class="status {e(record.status.value)}">'
                        f'{e(record.status.value)}</span>'),
             ("Submitted", e(when(record.submitted_at))), ("Started", e(when(record.started_at))),
             ("Finished", e(when(record.finished_at))), ("Delay", e(duration(delay))),
             ("Execution", e(duration(run))),
             ("Attempts", f"{record.tries} this run · {record.attempt} in all"),
             ("Worker", e(record.worker_id or n.DASH))]
    dl = "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in facts)
    buttons = ""
    if record.status not in TERMINAL_STATUSES:
        buttons += form(f"jobs/{u(record.id)}/cancel", "Cancel", csrf, back=back, danger=True)
    if record.status in RETRYABLE_STATUSES:
        buttons += form(f"jobs/{u(record.id)}/retry", "Retry", csrf, back=back)
    last = chunks[-1].cursor if chunks else "0-0"
    live = "" if record.status in TERMINAL_STATUSES else f"{BASE}/live/jobs/{u(record.id)}?after={e(last)}"
    logs_live = "" if record.status in TERMINAL_STATUSES else (
        f"{BASE}/live/logs/{u(record.endpoint)}?job={u(record.id)}&after={u(logs_next)}")
    stream = (f'<ol id="chunks" data-stream="{e(live)}">{"".join(map(_chunk_item, chunks))}</ol>')
    body = (f'{notice(message)}<div class="actions">{buttons}</div><dl>{dl}</dl>'
            f'<h2>Input</h2><pre>{e(pretty(record.input))}</pre>'
            f'<h2>Output</h2><pre id="job-output">{e(pretty(record.output))}</pre>'
            f'<h2>Error</h2><pre id="job-error">{e(record.error or n.DASH)}</pre>'
            f'<h2>Stream</h2>{stream}'
            f'<h2>Logs</h2>{log_block(logs, logs_live)}')
    return page(f"Job {record.id}", body, csrf=csrf)


def log_line(line: LogLine) -> str:
    """One log line: its time, worker, job and stream, and the text (all escaped)."""
    job = f" {line.job[:12]}" if line.job else ""
    head = f"{when(line.time)[11:23]} {line.worker}{job} {line.level or line.stream}"
    return f'<li><span class="head">{e(head)}</span> {e(line.line)}</li>'


def log_block(lines: Sequence[LogLine], live: str) -> str:
    """The last lines, and where the console script follows new ones ("" for none)."""
    empty = "" if lines else '<p class="empty">No log lines yet.</p>'
    return f'{empty}<ol id="logs" data-stream="{e(live)}">{"".join(map(log_line, lines))}</ol>'


def not_found(what: str, csrf: str) -> str:
    return page("Not found", notice(what, "error"), csrf=csrf)


# ---- templates and keys ------------------------------------------------------------------


def templates(found: Sequence[Template], csrf: str, message: str = "") -> str:
    back = f"{BASE}/templates"
    rows = (f"<tr><td>{e(t.name)}<div class=\"id\">{e(t.id)}</div></td><td>{e(t.image_name or n.DASH)}"
            f"</td><td>{e(t.handler or n.DASH)}</td><td>{e(t.protocol.value)}</td><td>"
            f"{form(f'templates/{u(t.id)}/delete', 'Delete', csrf, back=back, danger=True)}</td></tr>"
            for t in found)
    fields = ('<label>Name <input name="name" required></label>'
              '<label>Image <input name="image_name" placeholder="me/worker:1"></label>'
              '<label>Handler <input name="handler" placeholder="handler.py"></label>')
    body = (notice(message) + form("templates", "Create template", csrf, back=back, fields=fields)
            + table(("Template", "Image", "Handler", "Protocol", ""), rows,
                    "No templates yet."))
    return page("Templates", body, csrf=csrf)


def keys(found: Sequence[ApiKey], csrf: str, new_key: str = "", message: str = "") -> str:
    shown = ""
    if new_key:
        shown = (f'<div class="notice new-key" role="status">New key (shown once; copy it now): '
                 f'<code id="new-key">{e(new_key)}</code></div>')
    back = f"{BASE}/keys"
    rows = (f"<tr><td><code>{e(k.digest[:16])}…</code></td><td>{e(k.label or n.DASH)}</td>"
            f"<td>{e(', '.join(k.endpoints) or 'all')}</td><td>{'worker' if k.worker else 'client'}</td>"
            f"<td>{e(when(k.created_at))}</td><td>"
            f"{form(f'keys/{u(k.digest)}/revoke', 'Revoke', csrf, back=back, danger=True)}</td></tr>"
            for k in found)
    fields = ('<label>Label <input name="label"></label>'
              '<label>Endpoints <input name="endpoints" placeholder="all (or ids, comma-separated)">'
              '</label><label><input type="checkbox" name="worker" value="1"> worker key</label>')
    body = (notice(message) + shown + form("keys", "Create key", csrf, back=back, fields=fields)
            + table(("Digest", "Label", "Endpoints", "Kind", "Created", ""), rows,
                    "No stored keys (the admin key is not stored)."))
    return page("API keys", body, csrf=csrf)
