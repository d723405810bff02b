"""Rejects bodies over SAAS_MAX_BODY_BYTES with 413 before they are read into memory, and bodies
that take longer than SAAS_BODY_TIMEOUT to arrive with 408."""

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saas import problems
from saas.problems.responses import HTTPProblem, json_error


class BodyRefused(HTTPProblem):
    # An HTTPException so that FastAPI's body reader passes it through unchanged.
    pass


class BodyTooLarge(BodyRefused):
    def __init__(self, limit: int) -> None:
        detail = f"Request body is larger than {limit} bytes."
        super().__init__(problems.BODY_TOO_LARGE, detail, limit=limit)


class BodyTooSlow(BodyRefused):
    def __init__(self, timeout: float) -> None:
        # Close the connection: the rest of the body may still be on its way.
        super().__init__(
            problems.REQUEST_TIMEOUT,
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
        has_body = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    detail = "Invalid Content-Length header."
                    await json_error(problems.INVALID_CONTENT_LENGTH, detail)(scope, receive, send)
                    return
                if declared > self.limit:
                    await BodyTooLarge(self.limit).response()(scope, receive, send)
                    return
                has_body = has_body or declared > 0
            elif name == b"transfer-encoding":
                has_body = True
        if not has_body:  # nothing to count or wait for
            await self.app(scope, receive, send)
            return
        received = 0
        complete = False
        deadline = BodyDeadline(self.timeout)

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # after the body, receive() waits for the disconnect: no deadline
                return await receive()
            message = await deadline.receive(receive)
            if message["type"] == "http.request":
                # Chunked bodies declare no length: count as they arrive.
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
                complete = not message.get("more_body", False)
                if complete:
                    deadline.cancel()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except BodyRefused as refused:
            # Raised while a middleware, not the route, was reading the body (batch admission):
            # no exception handler is that far out. Nothing has answered yet: this app reads a
            # body before it answers.
            await refused.response()(scope, receive, send)
        finally:
            deadline.cancel()


class BodyDeadline:
    """The time a request's whole body gets to arrive. Uvicorn waits for a body's bytes as
    long as the client likes: a slowloris client sending one byte a second would hold its
    request open indefinitely.

    One timer per request, which cancels the task that waits for body bytes if it still waits
    then: about 4 us a request, where asyncio.timeout around each receive() cost 20 us
    (in-process, against this middleware without a deadline)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.task: asyncio.Task[object] | None = None  # the one waiting for bytes, if any
        self.expired = False
        self.timer = asyncio.get_running_loop().call_later(seconds, self._expire)

    async def receive(self, receive: Receive) -> Message:
        if self.expired:
            raise BodyTooSlow(self.seconds)
        self.task = asyncio.current_task()
        try:
            return await receive()
        except asyncio.CancelledError:
            # Ours (and no one else's): the body is late. Any other cancellation goes on.
            task = asyncio.current_task()
            if self.expired and task is not None and task.uncancel() == 0:
                raise BodyTooSlow(self.seconds) from None
            raise
        finally:
            self.task = None

    def cancel(self) -> None:
        self.timer.cancel()

    def _expire(self) -> None:
        self.expired = True
        if self.task is not None:
            self.task.cancel()
