"""Request size limits: the body (pure ASGI middleware, declared or chunked) and the headers (HTTP protocol).

The header limit cannot be an ASGI middleware: the app only sees a request once its
headers are fully read. ``uvicorn_http_options`` gives ``uvicorn.run`` an HTTP protocol
that counts the bytes of a request's line and headers as they arrive and answers 431
(then closes the connection) as soon as they pass the limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)


async def send_json(send: Send, status: int, body: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                    *(headers or [])],
    })
    await send({"type": "http.response.body", "body": data})


class BodyLimitMiddleware:
    """413 for a body over ``max_bytes``, whether it declares a Content-Length or arrives chunked.

    A declared length over the limit is refused before reading anything. Otherwise the
    body is read here while counting bytes (at most ``max_bytes`` are ever buffered) and
    handed to the app in one piece; the app never sees an oversized body.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_large(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await send_json(send, 413, {"error": f"request body over {self.max_bytes} bytes", "detail": None},
                        [(b"connection", b"close")])


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# ---------------------------------------------------------------------------- header limit
def uvicorn_http_options(max_header_bytes: int) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` capping a request's line + headers at ``max_header_bytes``.

    With httptools (the fast parser uvicorn picks when it is installed): a protocol class
    that answers 431 and closes the connection once the limit is passed. Without it: h11
    with its incomplete-event limit (uvicorn then answers 400, not 431).
    """
    try:
        protocol = header_limited_httptools_protocol(max_header_bytes)
    except ImportError:  # pragma: no cover - httptools is a dependency
        logger.warning("httptools not installed: h11 with a %d-byte header limit (400, not 431)", max_header_bytes)
        return {"http": "h11", "h11_max_incomplete_event_size": max_header_bytes}
    return {"http": protocol}


def header_limited_httptools_protocol(max_header_bytes: int) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, refusing a request whose line + headers pass ``max_header_bytes``.

    Two measures, both answered with a 431 (``ErrorOut`` JSON, ``Connection: close``) and a
    close, the request never reaching the app:

    * headers still incomplete: the bytes received since the end of the previous request
      (or the connection's start), counted per ``data_received`` chunk once it is parsed;
      past the limit the server stops reading, so it never buffers more than the limit plus
      one socket read;
    * headers complete (e.g. a whole request in one read): the size of the parsed request
      line and headers (URL, names and values plus their separators).
    """
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

    refusal = json.dumps({"error": f"request headers over {max_header_bytes} bytes", "detail": None}).encode()

    class HeaderLimitedHttpToolsProtocol(HttpToolsProtocol):
        """httptools, with a cap on the bytes of each request's line and headers (431, then close)."""

        max_header_bytes: int = 0
        _awaiting_headers = True  # between requests or inside a request's line/headers
        _header_bytes = 0  # bytes received while awaiting headers
        _refused = 0  # size of a complete head over the limit (the request never reaches the app)

        def data_received(self, data: bytes) -> None:
            if self._awaiting_headers:
                self._header_bytes += len(data)
            super().data_received(data)  # on_headers_complete / on_message_complete reset the count
            if self._refused:
                self._refuse_headers(self._refused)
            elif self._awaiting_headers and self._header_bytes > self.max_header_bytes:
                self._refuse_headers(self._header_bytes)

        def on_headers_complete(self) -> None:
            self._awaiting_headers, self._header_bytes = False, 0
            if not self._refused:  # a head that arrived whole in one read: measure it
                size = len(self.url) + 16 + sum(len(name) + len(value) + 4 for name, value in self.headers)
                if size > self.max_header_bytes:
                    self._refused = size
            if not self._refused:
                super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            self._awaiting_headers, self._header_bytes = True, 0
            if not self._refused:
                super().on_message_complete()

        def _refuse_headers(self, size: int) -> None:
            self._awaiting_headers = False
            if self.transport is None or self.transport.is_closing():
                return  # a parser error already answered 400 and closed
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
            logger.warning("%s: request headers over %d bytes (%d read): 431, connection closed",
                           client, self.max_header_bytes, size)
            head = [STATUS_LINE[431]]
            for name, value in self.server_state.default_headers:
                head.extend([name, b": ", value, b"\r\n"])
            head.extend([b"content-type: application/json\r\n",
                         b"content-length: " + str(len(refusal)).encode() + b"\r\n",
                         b"connection: close\r\n\r\n", refusal])
            self.transport.write(b"".join(head))
            self.transport.close()

    HeaderLimitedHttpToolsProtocol.max_header_bytes = max_header_bytes
    return HeaderLimitedHttpToolsProtocol
