"""Rejects bodies over SAAS_MAX_BODY_BYTES with 413 before they are read into memory, and bodies
that take longer than SAAS_BODY_TIMEOUT to arrive with 408."""

import asyncio

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saas.responses import json_error


class BodyRefused(HTTPException):
    # An HTTPException so that FastAPI's body reader passes it through unchanged.
    pass


class BodyTooLarge(BodyRefused):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body is larger than {limit} bytes.")


class BodyTooSlow(BodyRefused):
    def __init__(self, timeout: float) -> None:
        # Close the connection: the rest of the body may still be on its way.
        super().__init__(
            408,
            f"Request body did not arrive within {timeout:g} s.",
            headers={"Connection": "close"},
        )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_timeout: float) -> None:
        self.app = app
        self.limit = max_body_bytes
        self.timeout = body_timeout

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
        complete = False
        # Uvicorn waits for a body's bytes as long as the client likes (a slowloris client
        # sending one byte a second holds its request open indefinitely): one deadline for the
        # whole body.
        deadline = asyncio.get_running_loop().time() + self.timeout

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # after the body, receive() waits for the disconnect: no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTooSlow(self.timeout) from None
            if message["type"] == "http.request":
                # Chunked bodies declare no length: count as they arrive.
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
                complete = not message.get("more_body", False)
            return message

        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyRefused as refused:
            # Raised while a middleware, not the route, was reading the body (batch admission):
            # no exception handler is that far out.
            if started:
                raise
            await json_error(refused.status_code, refused.detail, refused.headers)(
                scope, receive, send
            )
