"""One JSON POST to one URL, for the network backends: through ``ops.engine.http1``, or through
aiohttp where an environment proxy applies to the URL (http1 speaks to servers directly).

Contract: ``post(body)`` returns the status, headers and body of the answer, whatever the status;
every failure below HTTP (refused, reset, timed out) is a ``TransientError``. The proxy comes
from ``HTTPS_PROXY``/``HTTP_PROXY`` by the URL's scheme, less ``NO_PROXY``, looked up once; a
loopback URL never goes through one, as in Go's net/http: a proxy cannot reach this machine's
loopback, and a local server (the ``local`` backend's, a vLLM on 127.0.0.1, a test's fake) must
keep working on a machine whose environment sets a proxy for the internet.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import orjson

from ops.engine.errors import TransientError
from ops.engine.http1 import HTTP1Client, HTTP1Error, Response

if TYPE_CHECKING:
    import aiohttp


def json_bytes(obj: object) -> bytes:
    """``obj`` as compact JSON, in a bytes object of its own size.

    orjson returns its output in the buffer it grew while writing, several times the text.
    Request bodies live for a whole request and cached answers until the writer thread commits
    them, so that slack is what broke the peak-RSS target at concurrency 256
    (bench/results/bench_ops_validation.md)."""
    return bytes(memoryview(orjson.dumps(obj)))


class JSONPost:
    def __init__(self, url: str, headers: Mapping[str, str], timeout_s: float):
        self.url = url
        self.headers = {"Content-Type": "application/json", **headers}
        self.timeout_s = timeout_s
        self.proxy = env_proxy(url)
        self._http1: HTTP1Client | None = None
        self._session: aiohttp.ClientSession | None = None

    async def post(self, body: bytes) -> Response:
        if self.proxy is not None:
            return await self._post_aiohttp(body)
        if self._http1 is None:  # created on first use, inside the running loop
            self._http1 = HTTP1Client(self.url, headers=self.headers, timeout_s=self.timeout_s)
        try:
            return await self._http1.post(body)
        except HTTP1Error as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc

    async def _post_aiohttp(self, body: bytes) -> Response:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),  # the engine bounds requests in flight
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers=self.headers,
            )
        try:
            async with self._session.post(self.url, data=body, proxy=self.proxy) as resp:
                headers = {k.lower(): v for k, v in resp.headers.items()}
                return Response(resp.status, headers, await resp.read())
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._http1 is not None:
            await self._http1.aclose()
            self._http1 = None
        if self._session is not None:
            await self._session.close()
            self._session = None


def env_proxy(url: str) -> str | None:
    """The proxy the environment variables route ``url`` through, read the way aiohttp's
    ``trust_env`` reads them; None for none, and always None for a loopback host."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if is_loopback(host):
        return None
    proxy = getproxies().get(parts.scheme)
    return None if proxy is None or proxy_bypass(host) else proxy


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
