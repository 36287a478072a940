"""Webhooks: POST a job's status body to its `webhook` URL when the job reaches a terminal state.

RunPod's rules (docs.runpod.io, "Send requests", webhooks): one POST per job when it ends, the
same body /status answers, the receiver must answer 2xx; on failure it is retried up to two more
times, 10 s apart. A webhook that fails never changes the job.

The script that ends a job pushes its id onto the durable `podq:webhooks` list when it has a
webhook (serverless/lua/_lib.lua). Every gateway replica's dispatcher blocks on that list and
moves each id onto its own claimed list (BLMOVE: one replica gets each id), delivers, then drops
it from there; so N replicas deliver once, and a job that ends while no gateway runs gets its
webhook when one starts. A dispatcher that stops hands what it claimed back; one that dies (its
alive mark in `podq:webhooks:dispatchers`, renewed every ALIVE_RENEW_S, runs out) has its claimed
ids moved back by another, so a gateway crash loses no webhook. Delivery is at least once: a
crash after a POST and before the id is dropped delivers that one again. A job that is retried
and ends again is pushed again. A job that cannot be read when its id is claimed (a Redis error)
is read again with backoff while its id stays claimed, never dropped.
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
import os
import re
import socket
import uuid
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
ALIVE_MS = 30_000  # how long a dispatcher counts as alive after its last mark
ALIVE_RENEW_S = 5.0  # how often it marks itself alive and looks for dead ones' claimed ids
# a delivery whose job cannot be read (Redis error) tries again after these, doubling
READ_RETRY_FIRST_S, READ_RETRY_MAX_S = 0.25, 5.0
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
        self._keeper: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._claimed = keys.WEBHOOKS_CLAIMED.format(self.id)

    async def start(self) -> None:
        """Start taking finished jobs with webhooks off the shared list, and (in the
        background, at once) mark this dispatcher alive and take back what dead ones claimed."""
        self._session = aiohttp.ClientSession()
        self._blocking = await connect_single(self._store.settings.redis_dsn)
        self._listener = asyncio.create_task(self._listen(), name="podq-webhooks")
        self._keeper = asyncio.create_task(self._keep_alive(), name="podq-webhooks-alive")

    async def close(self) -> None:
        """Stop listening, cancel deliveries still in flight and hand their ids back to the
        shared list (another replica, or this one's next start, delivers them)."""
        tasks = [t for t in (self._listener, self._keeper, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self._hand_back(self.id)
        except (RedisError, OSError) as e:  # its alive mark runs out; another takes them back
            log.warning("webhooks in flight not handed back (%s)", e)
        if self._session is not None:
            await self._session.close()
        if self._blocking is not None:
            await self._blocking.aclose()

    async def _mark_alive(self) -> None:
        await self._store.redis.hset(keys.WEBHOOK_DISPATCHERS, self.id, now_ms() + ALIVE_MS)

    async def _keep_alive(self) -> None:
        """Mark alive and recover at once, then every ALIVE_RENEW_S (a Redis that cannot be
        reached is retried, never a failed start)."""
        while True:
            try:
                await self._mark_alive()
                await self.recover()
            except (RedisError, OSError) as e:
                log.warning("webhooks could not reach Redis (%s); retrying", e)
            await asyncio.sleep(ALIVE_RENEW_S)

    async def recover(self) -> int:
        """Move the ids dead dispatchers claimed back onto the shared list; returns how many."""
        marks = await self._store.redis.hgetall(keys.WEBHOOK_DISPATCHERS)
        now = now_ms()
        moved = 0
        for raw_id, until in marks.items():
            dispatcher = raw_id.decode()
            if dispatcher != self.id and int(until) < now:
                moved += await self._hand_back(dispatcher)
        if moved:
            log.warning("webhooks: %d claimed by a gateway that stopped answering, delivered here", moved)
        return moved

    async def _hand_back(self, dispatcher: str) -> int:
        """Move `dispatcher`'s claimed ids back to the front of the shared list, then forget it."""
        redis, claimed, moved = self._store.redis, keys.WEBHOOKS_CLAIMED.format(dispatcher), 0
        while await redis.lmove(claimed, keys.WEBHOOKS, "RIGHT", "LEFT") is not None:
            moved += 1
        await redis.hdel(keys.WEBHOOK_DISPATCHERS, dispatcher)
        return moved

    async def _listen(self) -> None:
        assert self._blocking is not None
        while True:
            try:
                claimed = await self._blocking.blmove(keys.WEBHOOKS, self._claimed, 1, "LEFT", "RIGHT")
            except (RedisError, OSError) as e:
                log.warning("webhooks could not reach Redis (%s); retrying", e)
                await asyncio.sleep(0.5)
                continue
            if claimed is not None:
                self._spawn(claimed.decode())

    def _spawn(self, job_id: str) -> None:
        task = asyncio.create_task(self._handle(job_id), name=f"podq-webhook-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, job_id: str) -> None:
        """Deliver, then drop the id from this dispatcher's claimed list (a cancelled delivery,
        on close, leaves it there to be handed back)."""
        found = await self._read(job_id)
        if found is not None:
            record, endpoint_hook = found
            urls = targets(record.webhook, endpoint_hook)
            if urls:
                body = encode(lifecycle.status_body(record, now_ms()))
                await asyncio.gather(*(self._send(record, url, body) for url in urls))
        try:
            await self._store.redis.lrem(self._claimed, 1, job_id)
        except (RedisError, OSError) as e:  # it is delivered again after a hand-back: at least once
            log.warning("webhook for job %s delivered but not dropped from the claimed list: %s", job_id, e)

    async def _read(self, job_id: str) -> tuple[JobRecord, str | None] | None:
        """The finished job and its endpoint's webhook; None when there is nothing to deliver
        (its result expired, or it was retried meanwhile). A Redis error is retried, with
        backoff up to READ_RETRY_MAX_S, until Redis answers or the dispatcher closes: the id
        stays claimed meanwhile, so it is never dropped undelivered."""
        delay = READ_RETRY_FIRST_S
        while True:
            try:
                record = await self._store.get(job_id)
                if record is None or record.status not in TERMINAL_STATUSES:
                    return None
                return record, await self._registry.endpoint_webhook(record.endpoint)
            except (RedisError, OSError) as e:
                log.warning("webhook for job %s: reading the job failed (%s); retrying in %.1f s",
                            job_id, e, delay)
            await asyncio.sleep(delay)
            delay = min(2 * delay, READ_RETRY_MAX_S)

    async def _send(self, record: JobRecord, url: str, body: bytes) -> None:
        assert self._session is not None
        if await deliver(self._session, url, body, self._policy, self._observe):
            log.info("webhook for job %s delivered to %s", record.id, url)
        else:
            log.warning("webhook for job %s to %s failed on every try; the job is unchanged",
                        record.id, url)
