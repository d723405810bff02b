"""A secret is shown once, when it is made, and never again: no listing or detail view, API or
CLI, carries a webhook secret, a key or a key's hash."""

import json

from saas.auth import key_format


def test_no_output_shows_a_secret(saas, client, make_customer):
    admin = make_customer(scopes=("admin",))
    customer = make_customer(monthly_quota=100)
    account = str(customer.account_id)
    printed = saas("accounts", "webhook", account, "https://hooks.acme.example/q").stdout
    cli_secret = printed.strip().splitlines()[-1]
    api = client.put(
        f"/admin/accounts/{customer.account_id}/webhook",
        headers=admin.headers,
        json={"url": "https://hooks.acme.example/quota"},
    )
    assert api.status_code == 200
    api_secret = api.json()["secret"]
    assert len(cli_secret) == len(api_secret) == 64 and cli_secret != api_secret
    new_key = json.loads(saas("keys", "create", account, "--json").stdout)["key"]

    outputs = [
        saas(*command).stdout
        for command in [
            ("accounts", "list"),
            ("accounts", "list", "--json"),
            ("accounts", "show", account),
            ("accounts", "show", account, "--json"),
            ("keys", "list", account),
            ("keys", "list", account, "--json"),
            ("plans", "list", "--json"),
            ("audit", "--limit", "1000"),
            ("audit", "--limit", "1000", "--json"),
            ("usage", account, "--json"),
        ]
    ]
    h = admin.headers
    for path in [
        "/admin/accounts?limit=500",
        f"/admin/accounts/{customer.account_id}",
        f"/admin/accounts/{customer.account_id}/keys",
        "/admin/audit?limit=1000",
        "/admin/plans",
        f"/admin/usage?account={customer.account_id}",
    ]:
        response = client.get(path, headers=h)
        assert response.status_code == 200, path
        outputs.append(response.text)
    for path in ["/v1/keys", "/v1/usage"]:
        response = client.get(path, headers=customer.headers)
        assert response.status_code == 200, path
        outputs.append(response.text)

    everything = "\n".join(outputs)
    assert "https://hooks.acme.example/…" in everything  # scheme and host only
    for secret in [
        cli_secret,
        api_secret,
        new_key,
        customer.key,
        admin.key,
        "hooks.acme.example/quota",  # webhook URLs often carry a credential
        "hooks.acme.example/q",
    ]:
        assert secret not in everything
        assert key_format.hash_key(secret) not in everything
