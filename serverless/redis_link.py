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
from typing import Any, NamedTuple

import hiredis
from redis._parsers import BaseParser
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
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


class TakenOver(NamedTuple):
    """A connection `take_over` handed to a protocol."""

    connection: AbstractConnection  # redis-py's, kept in its client's pool (see take_over)
    transport: asyncio.WriteTransport
    # redis-py's stream protocol the connection had: the new protocol's connection_lost must
    # call its connection_lost too, so redis-py's disconnect (which waits for it) returns
    stream_protocol: asyncio.BaseProtocol


async def take_over(redis: Redis, protocol: asyncio.Protocol) -> TakenOver:
    """Open a connection with the settings of `redis`'s pool, let redis-py connect and
    authenticate it, then make `protocol` its protocol.

    The connection is counted among the pool's connections in use, so closing the client
    (`aclose`, which disconnects every connection of the pool) closes it too, even when its
    owner never gets to `release` it. Raises redis-py's ConnectionError (AuthenticationError,
    TimeoutError...) when it cannot connect."""
    pool = redis.connection_pool
    connection = pool.connection_class(**pool.connection_kwargs)
    await connection.connect()
    writer = getattr(connection, "_writer", None)
    in_use = getattr(pool, "_in_use_connections", None)
    if not isinstance(writer, asyncio.StreamWriter) or not isinstance(in_use, set):
        await connection.disconnect()  # a redis-py laid out differently: say so, do not guess
        raise RedisConnectionError("this redis-py version is not one podq's connections know "
                                   "(redis>=5,<6 is required)")
    stream_protocol = writer.transport.get_protocol()
    writer.transport.set_protocol(protocol)
    in_use.add(connection)
    return TakenOver(connection, writer.transport, stream_protocol)


async def release(redis: Redis, taken: TakenOver) -> None:
    """Close a connection `take_over` made and take it out of the pool's count."""
    redis.connection_pool._in_use_connections.discard(taken.connection)
    await taken.connection.disconnect(nowait=True)
