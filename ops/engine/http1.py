"""A lean HTTP/1.1 client for one URL: the openai backend's default transport.

Why not aiohttp's ``ClientSession``: an operation's request is one POST of a few KB to one
URL, and the session's generality (cookie jar, redirects, proxies, tracing, multidict headers,
a request and a response object, a pool keyed per origin) is most of what a request costs;
with it the engine misses its wall-time target against a bare client loop
(bench/results/bench_ops.md). The wire work stays in C: the event loop's transports send and
receive, and llhttp (through ``httptools``, the parser uvicorn uses; aiohttp's own is llhttp
too) parses every answer.

What it does: POST to one ``http`` or ``https`` URL; keep-alive connections, reused last-in
first-out, one request at a time each (no pipelining); answers delimited by Content-Length,
by chunked encoding or by the server closing the connection; gzip and deflate answers; one
deadline per request that covers connecting, sending and reading. A request on a reused
connection that closes before a byte of the answer arrives goes out again at once on a new
connection: that is the race with a server's keep-alive timeout, not a sign of trouble, so it
does not surface as an error for the engine to back off from. (A fresh connection that closes
unanswered is an error.)

What it leaves to callers: retries and back-off (the engine's), redirects (an API endpoint does
not redirect a POST; a 3xx comes back as an answer), proxies (the openai backend uses aiohttp
when a proxy environment variable applies to its URL). Every failure below HTTP is an
``HTTP1Error``; a status code is never an error here.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools


class HTTP1Error(Exception):
    """The exchange failed below HTTP: no connection, a dropped or malformed answer, or the
    deadline passed. Worth retrying."""


class HTTP1Timeout(HTTP1Error):
    """No complete answer before the request's deadline."""


class _NoAnswer(HTTP1Error):
    """The connection closed before a byte of the answer arrived."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names in lower case; a repeated name keeps its last value
    body: bytes


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and its parser; the waiter of the request it carries."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: HTTP1Client):
        self._loop = loop
        self._client = client
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._received = False  # a byte of the current answer arrived
        self._headers_done = False
        self.closed = False
        self.keep_alive = True

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._client._open.add(self)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes no request asked for: the stream cannot be trusted
            self.abort()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HTTP1Error(f"malformed answer from {self._client.origin}: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._client._open.discard(self)
        if self._waiter is None or self._waiter.done():
            return
        if self._headers_done and self._ends_at_close():
            self._complete()
        elif not self._received:
            self._fail(_NoAnswer(f"{self._client.origin} closed the connection without answering"))
        else:
            self._fail(HTTP1Error(f"{self._client.origin} closed the connection mid-answer"))

    # -- httptools callbacks --------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:  # 1xx: the real answer follows
            self._headers, self._body, self._headers_done = {}, [], False
            return
        self.keep_alive = self._parser.should_keep_alive()
        self._complete()
        if not self.keep_alive:
            self.close()

    # -- used by HTTP1Client --------------------------------------------------------------------

    def send(self, request: bytes) -> asyncio.Future[Response]:
        assert self._transport is not None and self._waiter is None
        self._waiter = waiter = self._loop.create_future()
        self._headers, self._body = {}, []
        self._received = self._headers_done = False
        self._transport.write(request)
        return waiter

    def expire(self, timeout_s: float) -> None:
        self._fail(HTTP1Timeout(f"no answer from {self._client.origin} within {timeout_s:g} s"))
        self.abort()

    def closing(self) -> bool:
        """Closed, or on its way: the server's close was read but not yet processed."""
        return self.closed or self._transport is None or self._transport.is_closing()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self.keep_alive = False
        if self._transport is not None:
            self._transport.abort()

    def _ends_at_close(self) -> bool:
        """Whether the answer's body is delimited by the connection closing (RFC 9112 6.3)."""
        h = self._headers
        return "content-length" not in h and "chunked" not in h.get("transfer-encoding", "")

    def _complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            body = b"".join(self._body)
            waiter.set_result(Response(self._parser.get_status_code(), self._headers, body))

    def _fail(self, exc: HTTP1Error) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class HTTP1Client:
    """POSTs to one URL over a pool of keep-alive connections. Create and use it inside one
    running event loop; ``aclose`` closes every connection."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        self.origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        self._timeout = timeout_s
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        # Without Accept-Encoding any coding is acceptable (RFC 9110 12.5.3); we want none.
        if not any(name.lower() == "accept-encoding" for name in headers):
            lines.append("Accept-Encoding: identity")
        # The request head up to the body's length, encoded once: a request adds the length and
        # the body.
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()

    async def post(self, body: bytes) -> Response:
        """Send ``body`` and return the complete answer, or raise ``HTTP1Error``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        request = b"".join((self._head, b"%d\r\n\r\n" % len(body), body))
        while self._idle:
            conn = self._idle.pop()
            if conn.closing():
                continue
            try:
                response = await self._exchange(conn, request, deadline)
            except _NoAnswer:
                continue  # closed by the server as the request went out: send it again
            return self._decoded(response)
        conn = await self._connect(loop, deadline)
        return self._decoded(await self._exchange(conn, request, deadline))

    async def aclose(self) -> None:
        self._idle.clear()
        for conn in list(self._open):
            conn.close()
        await asyncio.sleep(0)  # let the transports run connection_lost

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        try:
            async with asyncio.timeout_at(deadline):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, self),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except TimeoutError as exc:  # before OSError: TimeoutError is one
            raise HTTP1Timeout(
                f"no connection to {self.origin} within {self._timeout:g} s"
            ) from exc
        except OSError as exc:
            raise HTTP1Error(f"cannot connect to {self.origin}: {exc}") from exc
        return conn

    async def _exchange(self, conn: _Connection, request: bytes, deadline: float) -> Response:
        waiter = conn.send(request)
        timer = asyncio.get_running_loop().call_at(deadline, conn.expire, self._timeout)
        try:
            response = await waiter
        except BaseException:
            conn.abort()  # cancelled or failed mid-exchange: its stream state is unknown
            raise
        finally:
            timer.cancel()
        if conn.keep_alive and not conn.closing():
            self._idle.append(conn)
        return response

    def _decoded(self, response: Response) -> Response:
        coding = response.headers.get("content-encoding", "identity").strip().lower()
        if coding == "identity":
            return response
        if coding not in ("gzip", "x-gzip", "deflate"):
            raise HTTP1Error(f"{self.origin} answered in content-encoding {coding!r}")
        try:
            body = zlib.decompress(response.body, wbits=47)  # 32+15: gzip or zlib header
        except zlib.error as exc:
            raise HTTP1Error(f"{self.origin} sent a corrupt {coding} body: {exc}") from exc
        return Response(response.status, response.headers, body)
