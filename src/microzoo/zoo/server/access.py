"""Who may do what: the token of a request, the read check, and the rate limit on writes.

A token comes in the ``Authorization: Bearer TOKEN`` header (the API, ``microzoo push``) or, for
the web pages, in a form field remembered in the ``zoo_token`` cookie (HttpOnly, SameSite=Strict,
so another site cannot post with it). Writes are limited per token (per client address without
one) to ``write_rate_per_minute`` in any sliding minute, in memory: each server process counts
its own, which is what a single institute server needs.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from microzoo.errors import ZooError

TOKEN_COOKIE = "zoo_token"


@dataclass
class RateLimiter:
    """At most ``per_minute`` events per key in any 60 s window."""

    per_minute: int
    _events: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, key: str) -> None:
        """Count one event for ``key``; raise a 429 :class:`ZooError` when over the limit."""
        now = time.monotonic()
        with self._lock:
            events = self._events.setdefault(key, deque())
            while events and now - events[0] > 60.0:
                events.popleft()
            if len(events) >= self.per_minute:
                wait = 60.0 - (now - events[0])
                raise ZooError(
                    f"too many writes: at most {self.per_minute} a minute for one token; try again in {wait:.0f} s",
                    status=429,
                )
            events.append(now)
            if len(self._events) > 10_000:  # forget idle keys so the table stays small
                for stale in [k for k, v in self._events.items() if not v or now - v[-1] > 60.0]:
                    del self._events[stale]


def request_token(request: Request, form_token: str | None = None) -> str | None:
    """The token a request carries: a form field, the Authorization header, or the page cookie."""
    if form_token:
        return form_token.strip()
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.cookies.get(TOKEN_COOKIE) or None


def authorise_write(request: Request, role: str, form_token: str | None = None) -> Any:
    """Rate-limit, then check the token's role; returns the zoo's TokenInfo."""
    token = request_token(request, form_token)
    client = request.client.host if request.client else "unknown"
    key = hashlib.sha256(token.encode()).hexdigest()[:24] if token else f"client:{client}"
    request.app.state.rate_limiter.check(key)
    return request.app.state.zoo.authorise(token, role)


def rate_limit_client(request: Request) -> None:
    """Rate-limit a write that needs no token (try it) by the client's address."""
    client = request.client.host if request.client else "unknown"
    request.app.state.rate_limiter.check(f"client:{client}")


def check_read(request: Request) -> None:
    """On a zoo that requires a token to read, refuse a request without a valid one."""
    if request.app.state.read_token_required:
        request.app.state.zoo.authorise(request_token(request), "uploader")


async def read_allowed(request: Request) -> None:
    """:func:`check_read` as the routers' dependency: a public zoo's request is let through in the event
    loop (FastAPI would run a plain function in a worker thread, a hop of each request); a token is
    checked in a thread, as it reads the database."""
    if request.app.state.read_token_required:
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(check_read, request)


def base_url(request: Request) -> str:
    """The zoo's public address (``public_url``, else the address the request came to)."""
    configured: str | None = request.app.state.public_url
    return (configured or str(request.base_url)).rstrip("/")
