"""Rate-limit response headers: GitHub's X-RateLimit-* and the IETF draft's RateLimit-Policy and
RateLimit fields (draft-ietf-httpapi-ratelimit-headers), plus Retry-After on rejections."""

import math

from saas.ratelimit.windows import Decision, WindowState, ceil_seconds


def as_strings(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """ASGI's header pairs as the dict `json_error` takes."""
    return {name.decode(): value.decode() for name, value in headers}


def primary_window(decision: Decision) -> WindowState:
    """The window closest to running out (ties: the longest): it speaks for the X-RateLimit-*
    trio, and is the `limit` of a 429."""
    return min(decision.windows, key=lambda s: (s.remaining, -s.window.seconds))


def rate_limit_headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    if not decision.windows:
        return []
    primary = primary_window(decision)
    policy = ", ".join(
        f'"{s.window.name}";q={s.window.limit};w={s.window.seconds}' for s in decision.windows
    )
    current = ", ".join(
        f'"{s.window.name}";r={s.remaining};t={ceil_seconds(s.reset)}' for s in decision.windows
    )
    headers = [
        (b"x-ratelimit-limit", str(primary.window.limit).encode()),
        (b"x-ratelimit-remaining", str(primary.remaining).encode()),
        # GitHub's convention: the UTC epoch second at which the window frees up.
        (b"x-ratelimit-reset", str(math.ceil(decision.now + primary.reset)).encode()),
        (b"ratelimit-policy", policy.encode()),
        (b"ratelimit", current.encode()),
    ]
    if not decision.admitted:
        headers.append((b"retry-after", str(max(1, ceil_seconds(decision.retry_after))).encode()))
    return headers
