"""Reading a request's body before the route reads it.

Why this exists: the model policy judges a request's texts (and prices a batch: N texts are N
units of the rate limits and quota) before admission, in middleware, before the route has parsed
anything. So the admission step reads the whole body first (BodyLimitMiddleware, earlier in the
chain, has already capped its size) and hands the route a `receive` that replays the same bytes.
"""

from starlette.types import Message, Receive


async def read_body(receive: Receive) -> tuple[bytes, Receive]:
    """The whole request body, and a `receive` that gives it to the app again (then whatever the
    server sends next, such as a disconnect)."""
    chunks: list[bytes] = []
    pending: list[Message] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client left: replay that too
            pending.append(message)
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    pending.insert(0, {"type": "http.request", "body": body, "more_body": False})

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return body, replay
