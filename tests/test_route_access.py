"""Who may reach which route, checked on every route the app serves (read from app.routes, so a
route added later is checked without editing this file):

- a customer key gets 403 on every /admin route, with no data in the answer;
- every route a customer can reach that takes an id (in its path or its query) answers 404 to
  another account's id, exactly as to an id that does not exist: never that account's data,
  never a 403 that would confirm the id exists (the README: "another account's key id is 404").
  Operator routes that take an account and a key answer 404 when the key is another account's.

The dashboard's operator pages refuse a customer's session: tests/dashboard/test_admin.py
(test_a_customer_key_gets_403_on_every_admin_page), which walks the same app.routes.
"""

import re
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from saas.web.context import ADMIN_PREFIX
from tests.support.dashboard import csrf_of, signed_in
from tests.support.nlp import MODEL
from tests.support.problems import assert_problem

ADMIN_PAGES = "/dashboard/admin"
# Path parameters that are not ids: the model's name, static files, the dashboard's fallback.
NOT_IDS = {"model", "name", "path"}
IS_ID = re.compile(r"(^|_)id$|^account$")
NO_ADMIN_SCOPE = "This key lacks the 'admin' scope."


def operations(app: FastAPI) -> Iterator[tuple[str, str, Any]]:
    """(method, path template, route) for every route the app serves, HEAD aside."""
    for context in iter_route_contexts(app.routes):
        if not context.path:
            continue
        for method in sorted(context.methods or ()):
            if method != "HEAD":
                yield method, context.path, getattr(context, "route", context)


def id_params(route: Any) -> list[str]:
    """The route's parameters, in path or query, that name a stored object."""
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return []
    names = [p.name for p in dependant.path_params + dependant.query_params]
    return [name for name in names if name not in NOT_IDS and IS_ID.search(name)]


def fill(path: str, values: dict[str, object]) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: str(values.get(m.group(1), "x")), path)


def test_a_customer_key_gets_403_and_no_data_on_every_admin_route(client, make_customer):
    customer = make_customer()
    victim = make_customer()
    values = {"account_id": victim.account_id, "key_id": victim.key_id, "name": victim.plan_name}
    checked = []
    for method, path, _ in operations(client.app):
        if not path.startswith(ADMIN_PREFIX + "/") and path != ADMIN_PREFIX:
            continue
        url = fill(path, values)
        body: dict[str, object] | None = {} if method in ("POST", "PUT", "PATCH") else None
        response = client.request(method, url, headers=customer.headers, json=body)
        assert response.status_code == 403, (method, url)
        assert_problem(response, "admin_scope_required", NO_ADMIN_SCOPE)
        for data in (victim.account_name, victim.plan_name, "@example.com"):
            assert data not in response.text, (method, url)
        checked.append((method, path))
    assert len(checked) >= 16, checked
    # Nothing was changed on the way: the victim's key and account still work.
    response = client.get("/v1/models", headers=victim.headers)
    assert response.status_code == 200, response.text


def customer_id_routes(app: FastAPI) -> list[tuple[str, str, list[str]]]:
    """Every route outside the operators' areas that takes an id."""
    return [
        (method, path, params)
        for method, path, route in operations(app)
        if not path.startswith((ADMIN_PREFIX, ADMIN_PAGES))
        if (params := id_params(route))
    ]


def without(text: str, ids: dict[str, int]) -> str:
    for value in ids.values():
        text = re.sub(rf"\b{value}\b", "{id}", text)
    return text


def test_another_accounts_id_is_404_on_every_customer_route(client, make_customer):
    alice = make_customer(max_keys=5)
    bob = make_customer(max_keys=5)
    bob_key_name = f"bobs-secret-name-{bob.key_id}"
    named = client.post("/v1/keys", headers=bob.headers, json={"name": bob_key_name})
    assert named.status_code == 201
    bob_ids = {"key_id": named.json()["id"]}
    missing_ids = {"key_id": 999_999_999}
    routes = customer_id_routes(client.app)
    assert {(m, p) for m, p, _ in routes} >= {
        ("DELETE", "/v1/keys/{key_id}"),
        ("GET", "/dashboard/keys/{key_id}/revoke"),
        ("POST", "/dashboard/keys/{key_id}/revoke"),
    }
    unknown = {name for _, _, params in routes for name in params} - bob_ids.keys()
    assert not unknown, f"new id parameters {unknown}: give this test another account's id"

    browser = signed_in(client, alice.key)
    token = csrf_of(browser.get("/dashboard/keys").text)
    for method, path, params in routes:
        answers = []
        for ids in (bob_ids, missing_ids):
            url = fill(path, {"model": MODEL, **ids})
            query = {name: ids[name] for name in params if "{" + name not in path}
            if path.startswith("/dashboard"):
                data = {"csrf_token": token} if method == "POST" else None
                answer = browser.request(method, url, params=query, data=data)
            else:
                answer = client.request(method, url, params=query, headers=alice.headers)
            answers.append(answer)
        theirs, nobodys = answers
        assert theirs.status_code == nobodys.status_code == 404, (method, path, theirs.text)
        # Nothing tells them apart but the id itself.
        assert without(theirs.text, bob_ids) == without(nobodys.text, missing_ids), (method, path)
        for secret in (bob_key_name, bob.account_name, named.json()["prefix"]):
            assert secret not in theirs.text, (method, path)

    # Bob's key was neither revoked nor touched.
    still = client.get("/v1/models", headers={"X-API-Key": named.json()["key"]})
    assert still.status_code == 200


def test_an_operator_page_for_one_account_does_not_reach_anothers_key(client, make_customer):
    operator = make_customer(scopes=("admin",))
    mine = make_customer()
    theirs = make_customer()
    routes = [
        (method, path)
        for method, path, route in operations(client.app)
        if {"account_id", "key_id"} <= set(id_params(route))
    ]
    assert len(routes) >= 3, routes
    browser = signed_in(client, operator.key)
    token = csrf_of(browser.get(f"{ADMIN_PAGES}/accounts/{mine.account_id}").text)
    for method, path in routes:
        url = fill(path, {"account_id": mine.account_id, "key_id": theirs.key_id})
        data = {"csrf_token": token} if method == "POST" else None
        answer = browser.request(method, url, data=data)
        assert answer.status_code == 404, (method, path, answer.status_code)
    assert client.get("/v1/models", headers={"X-API-Key": theirs.key}).status_code == 200
