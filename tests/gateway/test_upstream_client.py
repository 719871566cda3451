"""The pooled HTTP/1.1 upstream client against tiny raw servers: framing, stale connections, timeouts."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from ccledger.gateway.upstream import UpstreamError, UpstreamPool


async def _serve(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def test_chunked_response_and_stale_connection_retry():
    seen: list[bytes] = []

    async def handler(reader, writer):
        # Answer one request with a chunked body, then close without saying so: the next request sent
        # on this pooled connection meets a dead socket and must be retried on a fresh one.
        seen.append(await _read_request(reader))
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    async def main():
        server, url = await _serve(handler)
        pool = UpstreamPool(url)
        for _ in range(3):
            resp = await pool.request(b"POST", b"/v1/messages?beta=true", [b"x-a: 1\r\n"], b'{"a":1}')
            assert resp.status == 200 and resp.header(b"x-up") == "1"
            assert await resp.read() == b"hello world"
            resp.release()
            await asyncio.sleep(0.05)  # let the server's close arrive (or not) before reuse
        await pool.close()
        server.close()

    asyncio.run(main())
    assert len(seen) == 3
    assert seen[0].startswith(b"POST /v1/messages?beta=true HTTP/1.1\r\n")
    assert b"x-a: 1\r\n" in seen[0] and seen[0].endswith(b'{"a":1}')


def test_read_inactivity_timeout_and_refused_connection():
    async def handler(reader, writer):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(5)  # then silence

    async def main():
        server, url = await _serve(handler)
        pool = UpstreamPool(url, read_timeout=0.2)
        resp = await pool.request(b"POST", b"/", [], b"")
        with pytest.raises(TimeoutError):
            await resp.read()
        resp.release()
        await pool.close()
        server.close()
        dead = UpstreamPool(url)  # the server is gone now
        with pytest.raises(UpstreamError):
            await dead.request(b"POST", b"/", [], b"")

    asyncio.run(main())


def test_close_delimited_response_ends_at_eof():
    """Neither content-length nor chunked: the body is everything up to the server's clean close
    (RFC 9112 §6.3). The connection is then not reused."""
    connections = 0

    async def handler(reader, writer):
        nonlocal connections
        connections += 1
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
        await writer.drain()
        for part in (b'{"id":"msg_1",', b'"usage":{"output_tokens":3}}'):
            await asyncio.sleep(0.02)
            writer.write(part)
            await writer.drain()
        writer.close()

    async def main():
        server, url = await _serve(handler)
        pool = UpstreamPool(url)
        for _ in range(2):
            resp = await pool.request(b"POST", b"/v1/messages", [], b"{}")
            assert resp.status == 200
            assert await resp.read() == b'{"id":"msg_1","usage":{"output_tokens":3}}'
            resp.release()
        # Streaming consumers see the parts as they arrive, then the end.
        resp = await pool.request(b"POST", b"/v1/messages", [], b"{}")
        assert [c async for c in resp.iter_chunks()] == [b'{"id":"msg_1",', b'"usage":{"output_tokens":3}}']
        resp.release()
        assert not pool._idle
        await pool.close()
        server.close()

    asyncio.run(main())
    assert connections == 3


def test_truncated_bodies_still_fail():
    """A close before the announced length (or the last chunk) is an error, not a short body."""
    replies = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    ]

    async def handler(reader, writer):
        await _read_request(reader)
        writer.write(replies.pop(0))
        await writer.drain()
        writer.close()

    async def main():
        server, url = await _serve(handler)
        pool = UpstreamPool(url)
        for _ in range(2):
            resp = await pool.request(b"POST", b"/", [], b"")
            with pytest.raises(UpstreamError):
                await resp.read()
            resp.release()
        await pool.close()
        server.close()

    asyncio.run(main())


def test_stale_connection_retried_on_a_new_connection_not_another_idle_one():
    """Two pooled connections go stale together (the upstream's idle timeout closes both): the retry
    after the first one fails must open a new connection, not take the other, equally stale one."""
    connections = 0

    async def handler(reader, writer):
        nonlocal connections
        connections += 1
        await _read_request(reader)
        await asyncio.sleep(0.05)  # so both first requests are in flight at once: two connections
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        # The next request on this connection is read and dropped without a byte of response.
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await _read_request(reader)
        writer.close()

    async def one(pool):
        resp = await pool.request(b"POST", b"/", [], b"")
        body = await resp.read()
        resp.release()
        return resp.status, body

    async def main():
        server, url = await _serve(handler)
        pool = UpstreamPool(url)
        assert await asyncio.gather(one(pool), one(pool)) == [(200, b"ok"), (200, b"ok")]
        assert len(pool._idle) == 2
        assert await one(pool) == (200, b"ok")
        await pool.close()
        server.close()

    asyncio.run(main())
    assert connections == 3
