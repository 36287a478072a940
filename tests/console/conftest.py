"""Console fixtures: a real gateway (tests/gateway/conftest.py) and a browser-like aiohttp
session that keeps the console's cookie (CookieJar(unsafe=True): the gateway listens on an IP
address, whose cookies aiohttp's default jar refuses)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from tests.gateway.conftest import (  # noqa: F401 (fixtures)
    ADMIN_KEY, Gateway, gateway, make_gateway, registered, workers,
)

CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


@dataclass
class Console:
    """A gateway's console as a browser without JavaScript sees it."""

    url: str
    session: aiohttp.ClientSession

    async def sign_in(self, key: str = ADMIN_KEY) -> aiohttp.ClientResponse:
        async with self.session.post(f"{self.url}/console/sign-in", data={"key": key},
                                     allow_redirects=False) as r:
            await r.read()
            return r

    async def get(self, path: str, **kw: object) -> tuple[int, str]:
        async with self.session.get(f"{self.url}{path}", **kw) as r:  # type: ignore[arg-type]
            return r.status, await r.text()

    async def csrf(self) -> str:
        status, text = await self.get("/console/keys")
        assert status == 200, text
        match = CSRF.search(text)
        assert match, "no CSRF token on the keys page"
        return match.group(1)

    async def post(self, path: str, data: dict[str, str], follow: bool = False) -> tuple[int, str, str]:
        """(status, Location, body) of a form POST."""
        async with self.session.post(f"{self.url}{path}", data=data, allow_redirects=follow) as r:
            return r.status, r.headers.get("Location", ""), await r.text()


@pytest.fixture
async def console(gateway: Gateway) -> AsyncIterator[Console]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield Console(gateway.url, session)


@pytest.fixture
async def signed_in(console: Console) -> Console:
    r = await console.sign_in()
    assert r.status == 303, r.status
    return console
