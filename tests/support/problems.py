"""The shape of every error answer (RFC 9457 problem details), checked one way everywhere."""

from typing import Any

import httpx

from saas.problems import MEDIA_TYPE, PAGE, REGISTRY

# The members every problem has, and those that only some carry (saas/problems/__init__.py).
PROBLEM_MEMBERS = {"type", "title", "status", "detail", "code"}
PROBLEM_EXTRAS = {"retry_after", "limit", "texts_index", "errors"}
ANY = object()  # for assert_problem: the member is there, whatever its value


def assert_problem(
    response: httpx.Response,
    code: str,
    detail: str | None = None,
    root_path: str = "",
    **fields: Any,
) -> dict[str, Any]:
    """`response` is the problem details of `code`: its registry entry's status and title,
    `application/problem+json`, `type` linking to the code on the Errors page, a `detail`, and
    exactly the extension members the code always carries plus `fields` (each with its value,
    or ANY); `retry_after` whenever Retry-After is sent. Returns the body."""
    problem = REGISTRY[code]
    assert response.status_code == problem.status, response.text
    assert response.headers["content-type"] == MEDIA_TYPE, response.headers
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["type"] == f"{root_path}{PAGE}#{code}", body
    assert (body["title"], body["status"]) == (problem.title, problem.status), body
    assert isinstance(body["detail"], str) and body["detail"].strip(), body
    if detail is not None:
        assert body["detail"] == detail, body
    retry = response.headers.get("retry-after")
    expected = set(problem.extras) | set(fields) | ({"retry_after"} if retry else set())
    assert set(body) == PROBLEM_MEMBERS | expected, body
    if retry is not None:
        assert body["retry_after"] == int(retry), body
    for name, value in fields.items():
        assert value is ANY or body[name] == value, (name, body)
    assert "Traceback" not in response.text
    return body
