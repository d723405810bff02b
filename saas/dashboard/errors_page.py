"""`GET /errors`: every error code with its status and meaning, rendered from saas/problems/.
Each answer's `type` points at its row here (`/errors#rate_limited`), so the link works with no
internet access, behind the proxy's prefix too. Public, and dressed like the dashboard: its
layout, stylesheet and security headers (no script at all)."""

import re
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from saas import problems
from saas.dashboard import pages

router = APIRouter(include_in_schema=False)
_CODE_SPAN = re.compile(r"`([^`]+)`")


def _row(problem: problems.ProblemType) -> dict[str, Any]:
    # The meaning's Markdown code spans, for <code>: re.split leaves them at odd places.
    parts = _CODE_SPAN.split(problem.meaning)
    meaning = [(index % 2 == 1, part) for index, part in enumerate(parts) if part]
    return {"problem": problem, "meaning": meaning}


ROWS = [_row(problem) for problem in problems.REGISTRY.values()]


@router.get(problems.PAGE)
async def errors_page(request: Request) -> Response:
    example = problems.body(
        problems.RATE_LIMITED,
        "Rate limit exceeded; retry in 12 s.",
        request.scope.get("root_path", ""),
        {"retry_after": 12, "limit": 60},
    )
    response = pages.render(
        request, "errors.html", rows=ROWS, media_type=problems.MEDIA_TYPE, example=example
    )
    response.headers.update(pages.SECURITY_HEADERS)
    return response
