"""ASGI middleware for every request: a body-size limit, a request timeout and defensive response headers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
     b"object-src 'none'; frame-ancestors 'none'; base-uri 'none'"),
]
# FastAPI's /docs page loads Swagger UI from a CDN; it gets no CSP so that it keeps working where online.
_NO_CSP_PATHS = ("/docs", "/redoc")


class BodyTooLarge(Exception):
    """The request body passed the configured limit while it was being read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit:,} bytes")
        self.limit = limit


class LimitsMiddleware:
    """Refuses bodies over ``max_body_bytes`` (413), ends requests running over ``timeout_s`` (408)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        length = _content_length(scope)
        if length is not None and length > limit:
            await _send_error(send, 413, f"request body of {length:,} bytes is larger than this server's limit "
                                         f"of {limit:,} bytes")
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        csp = not scope["path"].startswith(_NO_CSP_PATHS)

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                headers += SECURITY_HEADERS if csp else SECURITY_HEADERS[:3]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, limited_receive, guarded_send), self.timeout_s)
        except asyncio.TimeoutError:
            if not started:
                await _send_error(send, 408, f"request took longer than {self.timeout_s:g} s and was stopped")
        except BodyTooLarge as e:
            if not started:
                await _send_error(send, 413, f"{e}; send fewer or smaller files")


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_error(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                          (b"connection", b"close"), *SECURITY_HEADERS]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
