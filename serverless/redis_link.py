"""A Redis connection opened by redis-py and then driven by an asyncio Protocol of podq's own.

redis-py does what a connection needs once: TCP or Unix socket, TLS, AUTH/HELLO for the ACL user,
SELECT, with the settings of the client's pool. After that, its per-command machinery (a pool
checkout, a task per read, its Python reply handling) costs more CPU than the round trip's own
system calls, on the paths every job takes: the AutoPipeline's commands
(serverless/autopipeline.py) and the pub/sub doorbells (serverless/notify.py). `take_over`
hands the connected transport to a Protocol instead, whose `data_received` feeds a hiredis Reader
and acts on each reply in the callback, with no task woken in between.
"""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
from redis._parsers import BaseParser
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse

def reply_reader(redis: Redis) -> hiredis.Reader:
    """A hiredis Reader as redis-py's own parser builds it for `redis`: error replies become the
    classes redis-py raises (ResponseError, NoScriptError, NoPermissionError...), and replies are
    decoded when the client decodes them."""
    options: dict[str, Any] = {"protocolError": InvalidResponse,
                               "replyError": BaseParser.parse_error}
    kwargs = redis.connection_pool.connection_kwargs
    if kwargs.get("decode_responses"):
        options.update(encoding=kwargs.get("encoding", "utf-8"),
                       errors=kwargs.get("encoding_errors", "strict"))
    return hiredis.Reader(**options)


async def take_over(redis: Redis, protocol: asyncio.Protocol) -> asyncio.StreamWriter:
    """Open a connection with the settings of `redis`'s pool (outside the pool), let redis-py
    connect and authenticate it, then make `protocol` its protocol.

    Returns the connection's StreamWriter: write through its `transport`, close it with `close()`,
    and keep it referenced while the connection is in use (a collected StreamWriter may close
    its transport). redis-py's connection object lets go of it, so collecting that object
    closes nothing. Raises redis-py's ConnectionError (AuthenticationError, TimeoutError...)
    when it cannot connect."""
    pool = redis.connection_pool
    connection = pool.connection_class(**pool.connection_kwargs)
    await connection.connect()
    writer = getattr(connection, "_writer", None)
    if not isinstance(writer, asyncio.StreamWriter):  # a redis-py laid out differently: say so
        await connection.disconnect()
        raise RedisConnectionError("redis-py connected without an asyncio stream writer")
    connection._writer = connection._reader = None  # its __del__ would close our transport
    writer.transport.set_protocol(protocol)
    return writer
