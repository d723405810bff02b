"""What the OpenAPI schema promises (saas/web/openapi.py), and the bugs contract fuzzing found
(tests/test_contract.py), each as a plain test: numbers beyond their columns were 500s, a 405
named only some of the path's methods."""

import uuid

import pytest

from saas.kit.fields import MAX_INT
from saas.problems import markdown_table
from tests.support.marks import SQLITE_ONLY
from tests.support.problems import PROBLEM_EXTRAS, PROBLEM_MEMBERS

BEYOND_64_BITS = 19775923005800954178382602436608  # the id schemathesis first found


@pytest.mark.parametrize(
    "path",
    [
        f"/admin/accounts/{BEYOND_64_BITS}/keys",
        f"/admin/accounts/{MAX_INT + 1}",
        "/admin/accounts/0",
        f"/admin/usage?account={BEYOND_64_BITS}",
        f"/admin/audit?actor_key_id={MAX_INT + 1}",
        f"/admin/accounts?offset={BEYOND_64_BITS}",
        "/admin/usage?status=1000000",
        "/admin/usage?to=0",  # pydantic would read it as a Unix time
    ],
)
def test_numbers_beyond_their_columns_are_422(client, make_customer, path):
    admin = make_customer(scopes=("admin",))
    response = client.get(path, headers=admin.headers)
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], str)


def test_ids_and_plan_numbers_at_their_bounds(client, make_customer):
    admin, customer = make_customer(scopes=("admin",)), make_customer()
    assert client.get(f"/admin/accounts/{MAX_INT}", headers=admin.headers).status_code == 404
    assert client.delete(f"/admin/keys/{MAX_INT}", headers=admin.headers).status_code == 404
    assert client.delete(f"/v1/keys/{BEYOND_64_BITS}", headers=customer.headers).status_code == 422
    name = f"big-{uuid.uuid4().hex[:6]}"
    too_big = {"name": name, "max_text_chars": MAX_INT + 1}  # an INTEGER column
    assert client.post("/admin/plans", headers=admin.headers, json=too_big).status_code == 422
    biggest = {"name": name, "max_text_chars": MAX_INT}
    assert client.post("/admin/plans", headers=admin.headers, json=biggest).status_code == 201


def test_405_allows_every_method_of_the_path(client, make_customer):
    admin = make_customer(scopes=("admin",))
    # GET and PATCH /admin/plans/{name} are two routes; the router's own 405 named only one.
    response = client.request("OPTIONS", "/admin/plans/free", headers=admin.headers)
    assert response.status_code == 405 and response.headers["allow"] == "GET, PATCH"
    response = client.put("/admin/accounts/1", headers=admin.headers)
    assert response.headers["allow"] == "GET, PATCH"
    assert client.request("OPTIONS", "/healthz").headers["allow"] == "GET"


@SQLITE_ONLY
def test_schema_declares_the_real_errors_and_models(client, settings):
    schema = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    operations = [
        (path, method, operation)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    ]
    for path, method, operation in operations:
        # Every operation may answer 500 (internal_error; inference_failed where spaCy runs).
        assert operation["responses"]["500"]["content"] == problem, (method, path)
        for status, answer in operation["responses"].items():
            if status.startswith(("4", "5")) and path != "/readyz":
                assert answer["content"] == problem, (path, status)
        if path.startswith(("/v1", "/admin")):  # what the middleware may answer
            assert {"401", "403", "429", "503"} <= set(operation["responses"]), (method, path)
            # Any one of the three forms of the key; under /admin, one with the admin scope.
            roles = ["admin"] if path.startswith("/admin") else []
            assert operation["security"] == [
                {"token": roles},
                {"bearer": roles},
                {"apiKey": roles},
            ], (method, path)
            if roles:
                assert "`admin` scope" in operation["description"], (method, path)
        else:
            assert "security" not in operation
        for parameter in operation.get("parameters", []):
            if parameter["name"] == "model":
                assert parameter["schema"]["enum"] == sorted(settings.models)
    schemes = schema["components"]["securitySchemes"]
    assert schemes["token"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": schemes["token"]["description"],
    }
    assert "Token sk_live_" in schemes["token"]["description"]
    assert (schemes["bearer"]["type"], schemes["bearer"]["scheme"]) == ("http", "bearer")
    assert (schemes["apiKey"]["in"], schemes["apiKey"]["name"]) == ("header", "X-API-Key")
    entities = schema["paths"]["/v1/{model}/entities"]["post"]["responses"]
    assert {"400", "402", "404", "413", "415", "422"} <= set(entities)
    assert "402" not in schema["paths"]["/v1/models"]["get"]["responses"]  # never billed


def test_nul_in_stored_or_searched_text_is_422(client, make_customer):
    """PostgreSQL's text cannot hold NUL: each of these was a 500 there (fine on SQLite)."""
    admin, customer = make_customer(scopes=("admin",)), make_customer()
    h = admin.headers
    account = {"name": "a\x00b", "email": "a@example.com", "plan": customer.plan_name}
    answers = [
        client.post("/admin/accounts", headers=h, json=account),
        client.get("/admin/accounts?q=a%00b", headers=h),
        client.get("/admin/audit?action=a%00b", headers=h),
        client.get("/admin/plans/a%00b", headers=h),
        client.get("/admin/usage?endpoint=a%00b", headers=h),
        client.post("/v1/keys", headers=customer.headers, json={"name": "a\x00b"}),
    ]
    assert [answer.status_code for answer in answers] == [422] * len(answers)


@SQLITE_ONLY
def test_the_problem_schema_and_the_errors_table(client):
    schema = client.get("/openapi.json").json()
    problem = schema["components"]["schemas"]["Problem"]
    assert problem["required"] == ["type", "title", "status", "detail", "code"]
    assert set(problem["properties"]) == PROBLEM_MEMBERS | PROBLEM_EXTRAS
    # Optional members are left out, never null: a generated client needs no null checks.
    assert all("anyOf" not in member for member in problem["properties"].values())
    assert schema["components"]["schemas"]["ValidationIssue"]["required"] == ["loc", "msg"]
    # /docs and /redoc show every code, as the README does.
    assert "## Errors" in schema["info"]["description"]
    assert markdown_table() in schema["info"]["description"]
