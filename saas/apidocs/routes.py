"""/docs (Swagger UI) and /redoc (ReDoc) from files shipped in the package (static/vendor, `make
vendor-docs`), so they work without internet access. Public, like /openapi.json: reading the docs
needs no key; "Authorize" in /docs keeps the key in the page, for the requests it sends.

Both pages start their viewer from a file of ours (static/), never an inline script, so they are
served under a Content-Security-Policy without inline script, as the dashboard is. Every URL they
carry starts with the request's root path (SAAS_ROOT_PATH: /api behind the proxy)."""

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from starlette.responses import Response

from saas.kit.assets import Assets

HERE = Path(__file__).parent
ASSETS = Assets(HERE / "static")
STATIC_PREFIX = "/docs/static"

# ReDoc's styles (styled-components) go into <style> elements it creates empty and then fills
# through the CSSOM, which a policy does not govern: allowed by the hash of the empty text. One
# stylesheet its bundle adds as text when it loads (perfect-scrollbar's) is allowed by its own
# hash. A refreshed ReDoc may change that one: the browser test (tests/e2e/test_docs.py) then
# fails with the hash Chromium asks for. A <style> with any other text stays refused.
REDOC_STYLES = (
    "'self' 'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=' "  # ""
    "'sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc='"  # perfect-scrollbar's CSS
)


def content_security_policy(style_src: str = "'self'") -> str:
    """What the two viewers need and nothing more: scripts, styles and the schema from this
    server; Swagger UI's icons are data: URIs in its stylesheet; ReDoc's search runs in a Worker
    it makes from a blob: URL; "Try it out" sends its requests to this server."""
    return (
        f"default-src 'none'; script-src 'self'; style-src {style_src}; "
        "img-src 'self' data:; font-src 'self'; connect-src 'self'; worker-src blob:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


SECURITY_HEADERS = {
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # for browsers that predate frame-ancestors
}

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(
    env=Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)
)


def page(request: Request, template: str, csp: str) -> Response:
    root = request.scope.get("root_path", "")

    def asset(name: str) -> str:
        return ASSETS.url(f"{root}{STATIC_PREFIX}", name)

    response: Response = templates.TemplateResponse(
        request,
        template,
        {
            "title": request.app.title,
            "spec_url": f"{root}{request.app.openapi_url}",
            "asset": asset,
        },
        headers={**SECURITY_HEADERS, "Content-Security-Policy": csp},
    )
    return response


@router.get("/docs")
async def swagger_ui(request: Request) -> Response:
    return page(request, "swagger-ui.html", content_security_policy())


@router.get("/redoc")
async def redoc(request: Request) -> Response:
    return page(request, "redoc.html", content_security_policy(REDOC_STYLES))


@router.get(STATIC_PREFIX + "/{name:path}")
async def static(name: str) -> Response:
    return ASSETS.response(name)
