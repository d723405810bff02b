"""Peeking at a batch request's body before the route reads it.

Why this exists: a batch of N texts is charged N units of the rate limits and quota, and admission
happens in middleware, before the route has parsed anything. So for batch paths the admission
step reads the whole body first (BodyLimitMiddleware, earlier in the chain, has already capped its
size), counts `texts`, and hands the route a `receive` that replays the same bytes. The route
still does all the validation; the count only prices the request.
"""

import json

import orjson
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


def count_texts(body: bytes) -> int | None:
    """len(body["texts"]), or None when the body is not JSON or `texts` is not a list."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        # The route parses with the standard library, which also takes what orjson refuses
        # (NaN, lone surrogates, UTF-16): count those the same way, or a batch would be charged 1.
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return None
    texts = data.get("texts") if isinstance(data, dict) else None
    return len(texts) if isinstance(texts, list) else None
