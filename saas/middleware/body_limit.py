"""Rejects bodies over SAAS_MAX_BODY_BYTES with 413 before they are read into memory."""

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saas.responses import json_error


class BodyTooLarge(HTTPException):
    # An HTTPException so that FastAPI's body reader passes it through unchanged.
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body is larger than {limit} bytes.")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await json_error(400, "Invalid Content-Length header.")(scope, receive, send)
                    return
                if declared > self.limit:
                    too_large = BodyTooLarge(self.limit)
                    await json_error(413, too_large.detail)(scope, receive, send)
                    return
        received = 0

        async def limited_receive() -> Message:
            # Chunked bodies declare no length: count as they arrive.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited_receive, send)
