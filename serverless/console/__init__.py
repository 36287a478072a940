"""The web console at /console: server-rendered pages from the gateway, one small script for
live updates over SSE, sign-in with the admin key (a signed session cookie), CSRF-checked
actions that work without JavaScript.

    auth.py     sessions: sign-in, the signed cookie, sign-out
    csrf.py     the token every action's form carries
    numbers.py  percentiles and cell texts from the metrics store's snapshot (pure)
    history.py  the per-minute history in Redis behind the 24 h charts, and its sampler
    jobs.py     recent jobs per endpoint (an index submit.lua keeps), retry all failed
    pages.py    the HTML (every user value escaped)
    live.py     the SSE routes: live figures, a job's chunks
    routes.py   the route table, the handlers, the gate middleware; `install(app)`

The gateway wires it in with `gate` (before its API-key middleware) and `install(app)`.
"""

from serverless.console.routes import gate, install

__all__ = ["gate", "install"]
