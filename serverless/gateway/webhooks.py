"""Webhooks: POST a job's status body to its `webhook` URL when the job reaches a terminal state.

RunPod's rules (docs.runpod.io, "Send requests", webhooks): one POST per job when it ends, the
same body /status answers, the receiver must answer 2xx; on failure it is retried up to two more
times, 10 s apart. A webhook that fails never changes the job.

The script that ends a job pushes its id onto the durable `podq:webhooks` list when it has a
webhook (serverless/lua/_lib.lua). Every gateway replica blocks on that list; BLPOP hands each
id to exactly one of them, so N replicas deliver once, and a job that ends while no gateway runs
gets its webhook when one starts. A job that is retried and ends again is pushed again.
Each delivery's outcome (success, failure, refused) and each retry is told to an observer:
the gateway's /metrics counts them (serverless/gateway/metrics.py).

Per-endpoint webhooks (EndpointConfig.webhook, Launch's post-inference hook): called after every
job of the endpoint reaches a terminal state (COMPLETED, FAILED, CANCELLED, TIMED_OUT, as the
request webhook is), with the same body, in addition to the request's own webhook (one POST per
distinct URL). The design adds nothing to /run: the registry keeps endpoint id -> URL in
keys.REGISTRY_WEBHOOKS; the script that ends a job reads that hash inside Redis (no round trip)
and queues the job on `podq:webhooks` when it has a webhook of its own or its endpoint has one,
so jobs from every submit path (/run, /runsync, OpenAI, batches, ...) and from clients that send
no webhook are covered, durably, once across replicas. The dispatcher then reads the endpoint's
URL when it delivers (one HGET beside the job read, off the hot path), so a webhook changed or
removed while a job ran applies to that job's end. Stamping the URL into the job at submit was
rejected: every submit path would need it, a handler would see a webhook its client never sent
(`job["webhook"]`), and a changed URL would reach only new jobs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp
import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from serverless import keys, lifecycle
from serverless.errors import BadRequest
from serverless.gateway.replies import encode
from serverless.model import TERMINAL_STATUSES, JobRecord
from serverless.queue import connect_single
from serverless.registry import Registry
from serverless.store import JobStore, now_ms

log = logging.getLogger("podq.webhooks")

SCHEMES = ("http", "https")
_EXAMPLE = "send an absolute URL such as https://example.com/hook"


class WebhookPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How webhooks are delivered; the defaults are RunPod's."""

    timeout_s: float = 10.0
    retries: int = 2
    retry_delay_s: float = 10.0
    # private, loopback and link-local targets are refused (SSRF) unless this is set
    # (PODQ_WEBHOOK_ALLOW_PRIVATE=true; `podq dev` sets it for local receivers)
    allow_private: bool = False


PRIVATE_HELP = "set PODQ_WEBHOOK_ALLOW_PRIVATE=true to allow private receivers"
# what a webhook may be: an absolute http(s) URL whose host is a name, an IPv4 address or a
# bracketed IPv6 one (RFC 3986's IPv6address, exactly what `ipaddress` takes, so a bracket the
# pattern admits is never refused by urlsplit), an optional port, then a path, query or fragment;
# the OpenAPI document states the same pattern
_H16, _OCTET = "[0-9A-Fa-f]{1,4}", "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_LS32 = f"({_H16}:{_H16}|{_OCTET}(\\.{_OCTET}){{3}})"
_IPV6 = "|".join([
    f"({_H16}:){{6}}{_LS32}", f"::({_H16}:){{5}}{_LS32}", f"({_H16})?::({_H16}:){{4}}{_LS32}",
    f"(({_H16}:){{0,1}}{_H16})?::({_H16}:){{3}}{_LS32}", f"(({_H16}:){{0,2}}{_H16})?::({_H16}:){{2}}{_LS32}",
    f"(({_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}", f"(({_H16}:){{0,4}}{_H16})?::{_LS32}",
    f"(({_H16}:){{0,5}}{_H16})?::{_H16}", f"(({_H16}:){{0,6}}{_H16})?::",
])
URL_PATTERN = f"^https?://([A-Za-z0-9._~-]+|\\[({_IPV6})\\])(:[0-9]{{1,5}})?([/?#].*)?$"
_URL = re.compile(URL_PATTERN)
# What a delivery tells its observer: its outcome (once), and each retry before it.
SUCCESS, FAILURE, REFUSED, RETRY = "success", "failure", "refused", "retry"
Observer = Callable[[str], None]


def unobserved(event: str) -> None:
    """The observer of deliveries nobody counts."""


def is_private(address: str) -> bool:
    """Loopback, private, link-local, reserved, multicast or unspecified (pure)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def check_url(url: str, allow_private: bool = True) -> None:
    """Refuse (400) a webhook that is not an absolute http(s) URL, or that names a private
    address literally (`localhost`, `10.0.0.1`, ...) when those are not allowed."""
    if not url.isprintable() or " " in url:  # urlsplit would quietly strip or keep them
        raise BadRequest(
            f"webhook {url!r} contains spaces or control characters; percent-encode them "
            "(%20) or remove them"
        )
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as e:
        raise BadRequest(f"webhook {url!r} is not a valid URL ({e}); {_EXAMPLE}") from e
    if parts.scheme not in SCHEMES or not host:
        raise BadRequest(f"webhook {url!r} is not an http(s) URL; {_EXAMPLE}")
    if not _URL.match(url):
        raise BadRequest(f"webhook {url!r} is not an http(s) URL with a host name (letters, digits, '._~-'), "
                         f"an IPv4 or a bracketed IPv6 address, and an optional port; {_EXAMPLE}")
    if not allow_private and (host == "localhost" or host.endswith(".localhost") or _literal_private(host)):
        raise BadRequest(f"webhook {url!r} points at a private or loopback address; {PRIVATE_HELP}")


def _literal_private(host: str) -> bool:
    try:
        return is_private(host)
    except ValueError:  # a name, not an address: checked when delivering
        return False


async def refusal(url: str, policy: WebhookPolicy) -> str | None:
    """Why a delivery to `url` must not be made (its host resolves to a private address),
    or None. Checked before every try, so a name that changes its address is caught."""
    if policy.allow_private:
        return None
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port)
    except OSError as e:
        return f"cannot resolve {host!r}: {e}"
    private = sorted({str(info[4][0]) for info in infos if is_private(str(info[4][0]))})
    return f"{host!r} resolves to private address {', '.join(private)}; {PRIVATE_HELP}" if private else None


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, timeout_s: float
) -> str | None:
    """POST once; None on a 2xx answer, else what went wrong."""
    try:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        headers = {"Content-Type": "application/json"}
        # no redirects: a public URL answering 307 -> http://169.254.169.254/ would walk past
        # the private-address check made on `url` (SSRF); a 3xx counts as a failed try
        async with session.post(url, data=body, headers=headers, timeout=timeout,
                                allow_redirects=False) as response:
            return None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except asyncio.TimeoutError:
        return f"no answer within {timeout_s} s"
    except aiohttp.ClientError as e:
        return f"{type(e).__name__}: {e}"


async def deliver(
    session: aiohttp.ClientSession, url: str, body: bytes, policy: WebhookPolicy,
    observe: Observer = unobserved,
) -> bool:
    """POST `body` to `url`, retrying `policy.retries` times; True once a 2xx came back.

    Args:
        session: the client session to send with.
        url: the webhook URL.
        body: the JSON body (a job's status body).
        policy: timeout, retries and the delay between tries.
        observe: told RETRY before each retry, then SUCCESS, FAILURE or REFUSED once.

    Returns:
        Whether the receiver accepted the body.
    """
    for attempt in range(1 + policy.retries):
        if attempt:
            observe(RETRY)
            await asyncio.sleep(policy.retry_delay_s)
        refused = await refusal(url, policy)
        if refused is not None:
            log.warning("webhook %s not delivered: %s", url, refused)
            observe(REFUSED)
            return False
        problem = await _post(session, url, body, policy.timeout_s)
        if problem is None:
            observe(SUCCESS)
            return True
        tries = 1 + policy.retries
        log.warning("webhook %s try %d/%d failed: %s", url, attempt + 1, tries, problem)
    observe(FAILURE)
    return False


def targets(request_hook: str | None, endpoint_hook: str | None) -> list[str]:
    """Where a finished job is POSTed: its request's webhook, then its endpoint's, each URL
    once (pure)."""
    return list(dict.fromkeys(url for url in (request_hook, endpoint_hook) if url))


class WebhookDispatcher:
    """Listens for finished jobs and delivers their webhooks (the request's and the
    endpoint's), each job in its own task."""

    def __init__(self, store: JobStore, policy: WebhookPolicy,
                 observe: Observer = unobserved) -> None:
        self._store, self._policy, self._observe = store, policy, observe
        self._registry = Registry(store.redis)
        self._blocking: Redis | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Start popping finished jobs with webhooks off the shared list."""
        self._session = aiohttp.ClientSession()
        self._blocking = await connect_single(self._store.settings.redis_dsn)
        self._listener = asyncio.create_task(self._listen(), name="podq-webhooks")

    async def close(self) -> None:
        """Stop listening and cancel deliveries still in flight."""
        tasks = [t for t in (self._listener, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._blocking is not None:
            await self._blocking.aclose()

    async def _listen(self) -> None:
        assert self._blocking is not None
        while True:
            try:
                popped = await self._blocking.blpop([keys.WEBHOOKS], timeout=1)
            except (RedisError, OSError) as e:
                log.warning("webhooks could not reach Redis (%s); retrying", e)
                await asyncio.sleep(0.5)
                continue
            if popped is not None:
                self._spawn(popped[1].decode())

    def _spawn(self, job_id: str) -> None:
        task = asyncio.create_task(self._handle(job_id), name=f"podq-webhook-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, job_id: str) -> None:
        try:
            record = await self._store.get(job_id)
            if record is None or record.status not in TERMINAL_STATUSES:
                return  # its result expired before delivery, or it was retried meanwhile
            endpoint_hook = await self._registry.endpoint_webhook(record.endpoint)
        except RedisError as e:
            log.warning("webhook for job %s not delivered: Redis error %s", job_id, e)
            return
        urls = targets(record.webhook, endpoint_hook)
        if urls:
            body = encode(lifecycle.status_body(record, now_ms()))
            await asyncio.gather(*(self._send(record, url, body) for url in urls))

    async def _send(self, record: JobRecord, url: str, body: bytes) -> None:
        assert self._session is not None
        if await deliver(self._session, url, body, self._policy, self._observe):
            log.info("webhook for job %s delivered to %s", record.id, url)
        else:
            log.warning("webhook for job %s to %s failed on every try; the job is unchanged",
                        record.id, url)
