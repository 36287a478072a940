"""A Redis connection opened by redis-py and then driven by an asyncio Protocol of podq's own.

redis-py does what a connection needs once: TCP or Unix socket, TLS, AUTH/HELLO for the ACL user,
SELECT, with the settings of the client's pool. After that, its per-command machinery (a pool
checkout, a task per read, its Python reply handling) costs more CPU than the round trip's own
system calls, on the paths every job takes: the AutoPipeline's commands
(serverless/autopipeline.py) and the pub/sub doorbells (serverless/notify.py). `take_over`
hands the connected transport to a Protocol instead (a `ReplyProtocol`), whose `data_received`
feeds a hiredis Reader and acts on each reply in the callback, with no task woken in between.
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


class ReplyProtocol(asyncio.Protocol):
    """What every taken-over connection's protocol does alike: `data_received` parses replies
    with a hiredis Reader (`reply_reader`) and hands each to `on_reply`; a reply stream out of
    sync (the transport is aborted: nothing after it can be trusted) or a lost connection goes
    to `on_lost` as redis-py's ConnectionError, and redis-py's own protocol learns of the loss
    too (`TakenOver.stream_protocol`). `taken` is set once `take_over` has returned."""

    lost_note = ""  # added to a lost connection's error message

    def __init__(self, reader: hiredis.Reader) -> None:
        self._reader = reader
        self.taken: TakenOver | None = None

    def on_reply(self, reply: Any) -> None:
        raise NotImplementedError

    def on_lost(self, error: Exception) -> None:
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not False:
                self.on_reply(reply)
        except InvalidResponse as e:
            self.on_lost(RedisConnectionError(f"Redis sent an invalid reply ({e}); reconnecting"))
            if self.taken is not None:
                self.taken.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.taken is not None:
            self.taken.stream_protocol.connection_lost(exc)
        self.on_lost(RedisConnectionError(
            f"Connection to Redis lost{f' ({exc})' if exc else ''}{self.lost_note}"))

    def eof_received(self) -> bool | None:
        return False  # close the transport: Redis closed its side
