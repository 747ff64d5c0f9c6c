"""The openai backend's HTTP/1.1 client against raw servers on 127.0.0.1 that answer each request
with scripted bytes: framing, keep-alive, the server closing connections, deadlines, TLS."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trustme

from ops.engine.http1 import HTTP1Client, HTTP1Error, HTTP1Timeout

# What the server does with one request: write bytes and keep the connection, or more.
Action = Callable[[asyncio.StreamWriter], Awaitable[None]]


def ok(body: bytes = b'{"ok": true}', *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def reply(data: bytes, *, close: bool = False) -> Action:
    async def act(writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        if close:
            writer.close()

    return act


@dataclass
class RawServer:
    """Answers request k (counted over all connections) with ``actions[k]``; records requests."""

    actions: list[Action]
    requests: list[tuple[int, bytes, bytes]] = field(default_factory=list)  # (conn, head, body)
    connections: int = 0
    eof_seen: int = 0  # connections whose client closed them
    url: str = ""
    _server: asyncio.Server | None = None

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        port = self._server.sockets[0].getsockname()[1]
        scheme = "https" if ssl_context else "http"
        self.url = f"{scheme}://{'localhost' if ssl_context else '127.0.0.1'}:{port}/v1/chat?x=1"
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.eof_seen += 1
                    return
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                self.requests.append((conn, head, body))
                await self.actions[len(self.requests) - 1](writer)
                if writer.is_closing():
                    return
        except ConnectionError:
            return


def run(actions: list[Action], scenario: Callable[[RawServer, HTTP1Client], Awaitable[None]],
        timeout_s: float = 5.0) -> RawServer:  # fmt: skip
    async def main() -> RawServer:
        server = await RawServer(actions).start()
        client = HTTP1Client(server.url, headers={"Authorization": "Bearer k"}, timeout_s=timeout_s)
        try:
            await scenario(server, client)
        finally:
            await client.aclose()
            await server.stop()
        return server

    return asyncio.run(main())


def test_request_wire_format_and_keep_alive() -> None:
    async def scenario(server: RawServer, client: HTTP1Client) -> None:
        for i in range(3):
            answer = await client.post(b'{"n": %d}' % i)
            assert (answer.status, answer.body) == (200, b'{"ok": true}')
            assert answer.headers["content-length"] == "12"

    server = run([reply(ok())] * 3, scenario)
    assert server.connections == 1  # three requests, one connection
    port = server.url.split(":")[2].split("/")[0]
    head = server.requests[0][1].decode()
    assert head == (
        f"POST /v1/chat?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer k\r\n"
        "Accept-Encoding: identity\r\nContent-Length: 8\r\n\r\n"
    )
    assert [body for _, _, body in server.requests] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']


def test_concurrent_requests_open_one_connection_each_and_reuse_them() -> None:
    async def slow(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.05)
        writer.write(ok())

    async def scenario(server: RawServer, client: HTTP1Client) -> None:
        for _ in range(2):
            answers = await asyncio.gather(*(client.post(b"{}") for _ in range(4)))
            assert all(a.status == 200 for a in answers)

    assert run([slow] * 8, scenario).connections == 4


@pytest.mark.parametrize(
    "answer",
    [
        # chunked, split over two chunks
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        # an interim 100 Continue before the answer
        b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"hello world"),
        # gzip-coded, although the request said identity
        ok(gzip.compress(b"hello world"), "Content-Encoding: gzip"),
    ],
    ids=["chunked", "100-continue", "gzip"],
)
def test_answer_framings(answer: bytes) -> None:
    async def scenario(server: RawServer, client: HTTP1Client) -> None:
        assert (await client.post(b"{}")).body == b"hello world"
        assert (await client.post(b"{}")).body == b"hello world"

    assert run([reply(answer)] * 2, scenario).connections == 1


def test_answer_delimited_by_close_and_connection_close_are_not_reused() -> None:
    until_close = b"HTTP/1.1 200 OK\r\n\r\nall of it"
    conn_close = ok(b"done", "Connection: close")

    async def scenario(server: RawServer, client: HTTP1Client) -> None:
        assert (await client.post(b"{}")).body == b"all of it"
        assert (await client.post(b"{}")).body == b"done"
        assert (await client.post(b"{}")).body == b'{"ok": true}'

    actions = [reply(until_close, close=True), reply(conn_close), reply(ok())]
    assert run(actions, scenario).connections == 3


def test_connection_closed_by_the_server_while_idle_is_replaced_silently() -> None:
    """A server's keep-alive timeout: the next request goes out on a new connection, once."""

    async def scenario(server: RawServer, client: HTTP1Client) -> None:
        assert (await client.post(b"{}")).status == 200
        await asyncio.sleep(0.05)
        assert (await client.post(b"{}")).status == 200

    server = run([reply(ok(), close=True), reply(ok())], scenario)
    assert server.connections == 2
    assert len(server.requests) == 2


def test_reused_connection_that_dies_unanswered_sends_again_on_a_new_one() -> None:
    """The request reached a connection the server was closing: sent again, never lost."""

    async def drop(writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()

    async def scenario(server: RawServer, client: HTTP1Client) -> None:
        assert (await client.post(b"{}")).status == 200
        assert (await client.post(b"{}")).status == 200  # the second try of this one is answered

    server = run([reply(ok()), drop, reply(ok())], scenario)
    assert [conn for conn, _, _ in server.requests] == [1, 1, 2]


def test_failures_below_http_are_http1_errors_naming_the_server() -> None:
    async def drop(writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()

    async def scenario(server: RawServer, client: HTTP1Client) -> None:
        # a fresh connection closed without an answer is not retried: the engine decides
        with pytest.raises(HTTP1Error, match="closed the connection without answering"):
            await client.post(b"{}")
        with pytest.raises(HTTP1Error, match="mid-answer"):
            await client.post(b"{}")
        with pytest.raises(HTTP1Error, match=r"malformed answer from http://127\.0\.0\.1"):
            await client.post(b"{}")
        with pytest.raises(HTTP1Error, match="content-encoding 'br'"):
            await client.post(b"{}")
        assert (await client.post(b"{}")).status == 200  # and the client still works

    actions = [
        drop,
        reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", close=True),
        reply(b"HTTP/1.1 abc nonsense\r\n\r\n"),
        reply(ok(b"x", "Content-Encoding: br")),
        reply(ok()),
    ]
    run(actions, scenario)


def test_connection_refused() -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        client = HTTP1Client(f"http://127.0.0.1:{port}/v1", headers={}, timeout_s=5)
        with pytest.raises(HTTP1Error, match=f"cannot connect to http://127.0.0.1:{port}"):
            await client.post(b"{}")

    asyncio.run(main())


def test_deadline_covers_the_whole_exchange_and_drops_the_connection() -> None:
    async def never(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nslow")  # and no more

    async def scenario(server: RawServer, client: HTTP1Client) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(
            HTTP1Timeout, match=r"no answer from http://127\.0\.0\.1:\d+ within 0\.3 s"
        ):
            await client.post(b"{}")
        assert 0.25 < loop.time() - t0 < 2.0
        assert (await client.post(b"{}")).status == 200
        await asyncio.sleep(0.05)
        assert server.eof_seen == 1  # the timed-out connection was closed, not reused

    server = run([never, reply(ok())], scenario, timeout_s=0.3)
    assert server.connections == 2


def test_a_cancelled_request_closes_its_connection() -> None:
    async def never(writer: asyncio.StreamWriter) -> None:
        """Reads the request and never answers."""

    async def scenario(server: RawServer, client: HTTP1Client) -> None:
        task = asyncio.ensure_future(client.post(b"{}"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)
        assert server.eof_seen == 1
        assert (await client.post(b"{}")).status == 200

    assert run([never, reply(ok())], scenario).connections == 2


def test_tls_with_a_trusted_and_an_untrusted_certificate() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)

    async def main() -> None:
        server = await RawServer([reply(ok())] * 2).start(server_ctx)
        try:
            client = HTTP1Client(server.url, headers={}, timeout_s=5, ssl_context=trusted)
            assert (await client.post(b"{}")).body == b'{"ok": true}'
            assert (await client.post(b"{}")).status == 200
            await client.aclose()
            assert server.connections == 1
            # the system's trust store does not know this CA
            untrusted = HTTP1Client(server.url, headers={}, timeout_s=5)
            with pytest.raises(
                HTTP1Error, match=r"cannot connect to https://localhost:\d+: .*CERTIFICATE"
            ):
                await untrusted.post(b"{}")
        finally:
            await server.stop()

    asyncio.run(main())


def test_only_http_urls() -> None:
    with pytest.raises(ValueError, match="not an http"):
        HTTP1Client("ftp://example.com/x", headers={}, timeout_s=1)


def test_json_bytes_holds_only_its_text() -> None:
    """A request body is held for the whole request: it must not carry orjson's growth buffer."""
    import tracemalloc

    import orjson

    from ops.engine.transport import json_bytes

    obj = {"model": "m", "messages": [{"role": "user", "content": "a caption, " * 400}]}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        body = json_bytes(obj)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert orjson.loads(body) == obj
    assert held < len(body) + 1024, (held, len(body))
