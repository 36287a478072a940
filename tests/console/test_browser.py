"""The console in a real browser: Playwright driving Debian's Chromium against a real gateway
(ThreadedGateway: its own loop in a thread, so Playwright's sync API runs here) on a real
redis-server, with an in-test worker streaming chunks.

Checked: sign-in, the endpoint page's queue depth changing live as jobs are submitted, a job
page showing chunks as they arrive, log lines arriving live, the cancel and retry buttons, no console errors, a wrong
key refused, a POST without the CSRF token refused. Screenshots go to docs/img/ for the docs.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serverless.gateway import GatewayOptions
from serverless.model import Status
from serverless.settings import Settings
from tests.conftest import register
from tests.gateway.conftest import ADMIN_KEY, ThreadedGateway, work
from worker.log_shipper import STDOUT, Target

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # the skip below says how to get it
    sync_playwright = None  # type: ignore[assignment]

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or sync_playwright is None,
    reason="browser tests need Debian's Chromium and Playwright: `apt-get install -y chromium "
           "fonts-liberation` and `.venv/bin/pip install 'playwright==1.65.*'` (never "
           "`playwright install`); `make test` does both when run as root",
)
IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
QUEUED, STREAMING = "ep-queue", "ep-stream"  # no worker / one in-test worker


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def gw(settings: Settings) -> Iterator[ThreadedGateway]:
    options = GatewayOptions(admin_key=ADMIN_KEY, reap_interval_s=0.1)
    with ThreadedGateway(settings, options, beside=(lambda s: work(s, STREAMING, "w0"),)) as gw:
        for endpoint in (QUEUED, STREAMING):
            gw.run(register(gw.store, endpoint))
        yield gw


class Tab:
    """A page and the console errors it logged."""

    def __init__(self, page: Page, url: str) -> None:
        self.page, self.url, self.errors = page, url, []  # type: list[str]
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def sign_in(self, key: str = ADMIN_KEY) -> None:
        self.page.goto(f"{self.url}/console/")
        expect(self.page).to_have_url(f"{self.url}/console/sign-in")
        self.page.fill("input[name=key]", key)
        self.page.click("button:has-text('Sign in')")

    def open(self, path: str) -> None:
        self.page.goto(self.url + path)


@pytest.fixture
def tab(browser: Browser, gw: ThreadedGateway) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = Tab(context.new_page(), gw.url)
    yield tab
    context.close()


def run(gw: ThreadedGateway, endpoint: str, value: Any) -> str:
    r = httpx.post(f"{gw.url}/v2/{endpoint}/run", json={"input": value},
                   headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


async def ship(gw: ThreadedGateway, endpoint: str, text: str) -> None:
    """A log line written as a worker's shipper writes it (worker/log_shipper.py)."""
    target = Target(gw.store.redis, endpoint, "w0", 10_000)
    try:
        await target.send(target.pack([(int(time.time() * 1000), STDOUT, "", "", text)], 0))
    finally:
        await target.close()


def until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def status(gw: ThreadedGateway, job_id: str) -> Status | None:
    record = gw.run(gw.store.get(job_id))
    return None if record is None else record.status


def test_queue_depth_changes_live(tab: Tab, gw: ThreadedGateway) -> None:
    done = [run(gw, STREAMING, {"n": i}) for i in range(5)]  # figures for the screenshots
    tab.sign_in()
    expect(tab.page.locator("h1")).to_have_text("Endpoints")
    tab.open(f"/console/endpoints/{QUEUED}")
    depth = tab.page.locator(f'td[data-k="{QUEUED}.queued"]')
    expect(depth).to_have_text("0")
    for i in range(3):
        run(gw, QUEUED, {"n": i})
    expect(depth).to_have_text("3", timeout=5000)  # no reload: the SSE event changed it
    gw.run(ship(gw, QUEUED, "loading weights <b>7 GB</b>"))
    expect(tab.page.locator("#logs li").last).to_contain_text("loading weights <b>7 GB</b>")
    assert tab.page.url.endswith(f"/console/endpoints/{QUEUED}")
    assert all(status(gw, j) is Status.COMPLETED for j in done)
    tab.open(f"/console/endpoints/{STREAMING}")
    expect(tab.page.locator("td", has_text="w0")).to_be_visible()
    tab.page.screenshot(path=str(IMG / "console-endpoint.png"), full_page=True)
    tab.open("/console/")
    expect(tab.page.locator(f'td[data-k="{QUEUED}.queued"]')).to_have_text("3")
    tab.page.screenshot(path=str(IMG / "console-endpoints.png"), full_page=True)
    assert tab.errors == []


def test_job_page_shows_chunks_as_they_arrive(tab: Tab, gw: ThreadedGateway) -> None:
    tab.sign_in()
    # under the test settings' 2 s lease: the in-test worker renews none, and a job it still
    # runs past its lease would be run again (its chunks written twice)
    chunks = [f"token {i}" for i in range(6)]
    job_id = run(gw, STREAMING, {"chunks": chunks, "gap_s": 0.25})
    tab.open(f"/console/jobs/{job_id}")
    items = tab.page.locator("#chunks li")
    at_load = items.count()
    assert at_load < len(chunks), "the job ended before the page loaded: nothing was live"
    expect(items).to_have_count(len(chunks), timeout=10_000)
    expect(items.last).to_have_text('"token 5"')
    expect(tab.page.locator("#job-status")).to_have_text("COMPLETED", timeout=5000)
    tab.page.screenshot(path=str(IMG / "console-job.png"), full_page=True)
    assert tab.errors == []


def test_cancel_and_retry_buttons(tab: Tab, gw: ThreadedGateway) -> None:
    tab.sign_in()
    queued = run(gw, QUEUED, {"n": 1})
    tab.open(f"/console/jobs/{queued}")
    tab.page.click("button:has-text('Cancel')")
    expect(tab.page.locator("#job-status")).to_have_text("CANCELLED")
    expect(tab.page.locator(".notice")).to_have_text("Cancel sent.")
    assert status(gw, queued) is Status.CANCELLED
    failing = run(gw, STREAMING, {"fail": "boom"})
    until(lambda: status(gw, failing) is Status.FAILED)
    tab.open(f"/console/jobs/{failing}")
    tab.page.click("button:has-text('Retry')")
    expect(tab.page.locator(".notice")).to_have_text("Queued again.")
    # queued again with its id: the worker takes it a second time (and it fails again)
    until(lambda: (r := gw.run(gw.store.get(failing))) is not None and r.attempt == 2)
    assert tab.errors == []


def test_a_wrong_key_cannot_sign_in(tab: Tab) -> None:
    tab.sign_in("not-the-key")
    expect(tab.page.locator(".notice.error")).to_contain_text("wrong key")
    tab.open("/console/keys")
    expect(tab.page).to_have_url(f"{tab.url}/console/sign-in")
    # the only error logged is the browser noting the refused sign-in's 401
    assert all("401" in e for e in tab.errors) and len(tab.errors) <= 1, tab.errors


def test_a_post_without_the_csrf_token_is_refused(tab: Tab, gw: ThreadedGateway) -> None:
    tab.sign_in()
    tab.open(f"/console/endpoints/{QUEUED}")
    # the session cookie goes with it (same browser context), the form's token does not
    refused = tab.page.request.post(f"{gw.url}/console/endpoints/{QUEUED}/resume", form={})
    assert refused.status == 403 and "CSRF" in refused.text()
    forged = tab.page.request.post(f"{gw.url}/console/endpoints/{QUEUED}/resume", form={"csrf": "0" * 40})
    assert forged.status == 403
    endpoint = gw.run(gw.store.redis.hget("podq:registry:endpoints", QUEUED))
    assert b'"paused":true' in endpoint  # unchanged
    tab.page.click("button:has-text('Resume')")  # the page's own form carries it
    expect(tab.page.locator(".notice")).to_have_text("Resumed.")
    assert tab.errors == []
