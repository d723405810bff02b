"""What a request costs is read from the Metering table next to the routes, before any route
runs; a customer route without an entry keeps the app from starting."""

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from saas.app import create_app
from saas.config import Settings
from saas.nlp import routes as nlp_routes
from saas.pipeline.request_context import MeteredRoutes
from saas.web.context import UNROUTED, Area, Metering, area_of
from tests.support.nlp import MODEL
from tests.support.problems import assert_problem


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(Settings(database_url="sqlite://", _env_file=None))


def resolve_with_model(
    app: FastAPI, method: str, path: str, root_path: str = ""
) -> tuple[Metering, str | None]:
    metered = app.user_middleware[0].kwargs["metered"]  # the outermost
    assert isinstance(metered, MeteredRoutes)
    scope = {"type": "http", "method": method, "path": root_path + path, "root_path": root_path}
    _, metering, model = metered.match(scope)
    return metering, metered.known(model)


def resolve(app: FastAPI, method: str, path: str, root_path: str = "") -> Metering:
    return resolve_with_model(app, method, path, root_path)[0]


def test_each_customer_route_has_its_metering(app: FastAPI) -> None:
    for task in ("entities", "tokens", "dependencies", "sentence-dependencies"):
        single = resolve(app, "POST", f"/v1/{MODEL}/{task}")
        assert single == Metering(task, billable=True, text_field="text")
        batch = resolve(app, "POST", f"/v1/{MODEL}/{task}/batch")
        assert batch == Metering(f"{task}/batch", billable=True, per_text=True, text_field="texts")
    extractions = resolve(app, "POST", "/v1/extractions")
    assert extractions == Metering(
        "extractions", billable=True, text_field="sentence", default_model=True
    )
    assert resolve(app, "GET", f"/v1/{MODEL}/versions") == Metering("versions")
    assert resolve(app, "GET", f"/v1/{MODEL}/version") == Metering("versions")
    assert resolve(app, "GET", "/v1/models") == Metering("models")
    assert resolve(app, "GET", "/v1/usage") == Metering("usage")
    assert resolve(app, "DELETE", "/v1/keys/3") == Metering("keys")
    # Behind the proxy the prefix is part of the path.
    assert resolve(app, "POST", f"/v1/{MODEL}/entities", root_path="/api").billable


def test_what_no_route_serves_is_never_billed(app: FastAPI) -> None:
    assert resolve(app, "POST", f"/v1/{MODEL}/versions/batch") is UNROUTED
    assert resolve(app, "POST", f"/v1/{MODEL}/entities/batch/more") is UNROUTED
    assert resolve(app, "POST", f"/v1/{MODEL}/made-up") is UNROUTED
    assert resolve(app, "GET", f"/v1/{MODEL}/entities") is UNROUTED  # 405
    assert not UNROUTED.billable


def test_a_customer_route_without_metering_stops_the_app(app: FastAPI) -> None:
    router = APIRouter(prefix="/v1")

    @router.post("/{model}/summaries")
    async def summaries() -> None: ...

    with pytest.raises(RuntimeError, match="summaries"):
        MeteredRoutes([nlp_routes.router, router], [nlp_routes.METERING])
    with pytest.raises(RuntimeError, match="declared twice"):
        MeteredRoutes([nlp_routes.router], [nlp_routes.METERING, {"entities": Metering("x")}])


def test_every_customer_route_the_app_serves_is_metered(app: FastAPI) -> None:
    """Walks the routes the app really serves (hidden ones too, with FastAPI's own walker): a
    customer router included without passing through MeteredRoutes would be served unbilled."""
    operations = [
        (method, route.path.replace("{model}", MODEL).replace("{key_id}", "1"))
        for route in iter_route_contexts(app.routes)
        if route.path and area_of(route.path) is Area.customer
        for method in route.methods or ()
        if method != "HEAD"
    ]
    assert len(operations) >= 15
    assert ("GET", f"/v1/{MODEL}/version") in operations  # not in the OpenAPI document
    for method, path in operations:
        assert resolve(app, method, path) is not UNROUTED, (method, path)


def test_the_model_is_kept_only_when_the_service_runs_it(app: FastAPI) -> None:
    assert resolve_with_model(app, "POST", f"/v1/{MODEL}/entities")[1] == MODEL
    assert resolve_with_model(app, "POST", "/v1/made_up_model/entities")[1] is None
    assert resolve_with_model(app, "GET", "/v1/models")[1] is None


def test_areas_are_decided_by_one_prefix_each() -> None:
    assert area_of("/v1") is area_of("/v1/models") is Area.customer
    assert area_of("/admin/plans") is Area.admin
    assert area_of("/v1models") is area_of("/healthz") is area_of("/docs") is Area.public


def test_a_bug_is_a_500_with_its_request_id_and_no_trace(app: FastAPI) -> None:
    @app.get("/probe-bug")
    async def bug() -> None:
        raise RuntimeError("secret internals")

    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: no models needed
    response = client.get("/probe-bug")
    assert_problem(response, "internal_error", "Internal server error.")
    assert len(response.headers["x-request-id"]) == 32
    assert "secret internals" not in response.text
