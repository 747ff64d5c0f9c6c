"""The three ways a backend call can fail, as the engine sees them.

Backends translate their client library's exceptions into these, so the engine's retry and
back-off logic never imports a provider SDK:

- ``TransientError``: worth retrying (429, 5xx, 408, timeouts, dropped connections).
  ``RateLimitedError`` is the 429 case and feeds the adaptive back-off.
- ``RequestError``: this request is wrong (400 context too long, 422): retrying will not help,
  but other requests may succeed, so the engine answers ``finish_reason="error"`` and the
  operation records a reject.
- ``BackendConfigError``: every request will fail (401 bad key, 403, 404 unknown model):
  raised to the caller at once with the fix, rather than turning a whole run into rejects.

A server's error message may quote what it was sent, the API key included: the engine passes
every text it stores, logs or raises through ``redact`` first.
"""

from __future__ import annotations


class TransientError(Exception):
    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ):
        super().__init__(message)
        self.status = status
        # Seconds the server asked us to wait (Retry-After / retry-after-ms), if it said.
        self.retry_after = retry_after


class RateLimitedError(TransientError):
    """The server answered 429: retried after its Retry-After, and it slows the engine down."""


class RequestError(Exception):
    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class BackendConfigError(ValueError):
    """A 401/403/404 or a missing key: retrying cannot help; the message says what to fix."""


def classify_status(
    status: int,
    message: str,
    retry_after: float | None,
    *,
    key_env: str = "the API key variable",
    model: str = "",
) -> Exception:
    """The engine error for a non-2xx HTTP status, shared by every HTTP backend. A configuration
    error says in one line what to fix: the key's variable, or the model."""
    if status == 429:
        return RateLimitedError(message, status=status, retry_after=retry_after)
    if status >= 500 or status in (408, 409):
        return TransientError(message, status=status, retry_after=retry_after)
    if status == 401:
        return BackendConfigError(
            f"the server refused the API key in {key_env} (HTTP 401: {message}); set a valid "
            "key there, or check --base-url"
        )
    if status == 403:
        return BackendConfigError(
            f"the key in {key_env} may not use model {model!r} (HTTP 403: {message}); check the "
            "key's permissions and --model"
        )
    if status == 404:
        return BackendConfigError(
            f"model {model!r} was not found (HTTP 404: {message}); check --model and --base-url"
        )
    return RequestError(message, status=status)


def parse_retry_after(headers: object) -> float | None:
    """Seconds from ``retry-after-ms`` (OpenAI) or ``Retry-After`` (seconds; HTTP-date ignored)."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = get(name)
        if value is not None:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


REDACTED = "[redacted]"


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every occurrence of each secret replaced (longest first, so that a key
    that contains another is not left half-visible)."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text
