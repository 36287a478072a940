"""CSRF: every console action is a POST whose form carries the session's token.

The token is derived from the session (auth.csrf_token: an HMAC of the session's nonce under the
shared secret), so it needs no storage, differs per session and cannot be made by another site.
The session cookie is SameSite=Strict as well; the token is what still holds where a browser
ignores SameSite. A POST without the token, or with another session's, is refused (403) before
its handler runs, and nothing changes.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from serverless.console.auth import Session

FIELD = "csrf"
REFUSED = ("this console action needs its form's CSRF token (field `csrf`): reload the page and "
           "use its buttons; a request made outside the console cannot change anything")


def token_ok(session: Session, presented: str | None) -> bool:
    """True when `presented` is `session`'s CSRF token (constant time)."""
    return bool(presented) and hmac.compare_digest(str(presented), session.csrf)


async def refusal(request: web.Request, session: Session) -> web.Response | None:
    """A 403 when the POST's form has no valid token for `session`; None when it has one."""
    form = await request.post()
    if token_ok(session, form.get(FIELD)):  # type: ignore[arg-type]
        return None
    return web.Response(status=403, text=REFUSED)
