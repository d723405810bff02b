"""The `saas` CLI: every command in process (the `saas` fixture), and the installed command as a
subprocess reading SAAS_DATABASE_URL, as operators and scripts run it (saas_process)."""

import getpass
import json
import os
import subprocess
import uuid

from saas.auth import key_format
from saas.kit import months
from tests.support.apps import SAAS


def test_plan_account_key_lifecycle(saas_process, client):
    """The installed command, as a subprocess, through a whole lifecycle."""
    saas = saas_process
    suffix = uuid.uuid4().hex[:8]
    plan = json.loads(
        saas(
            "plans",
            "create",
            f"pro-{suffix}",
            "--rate-limit",
            "5/second;100/minute",
            "--monthly-quota",
            "1000",
            "--max-text-chars",
            "500",
            "--json",
        ).stdout
    )
    assert plan["rate_limit"] == "5/second;100/minute" and plan["monthly_quota"] == 1000
    assert f"pro-{suffix}" in [
        p["name"] for p in json.loads(saas("plans", "list", "--json").stdout)
    ]

    account_id = saas(
        "accounts",
        "create",
        f"acme-{suffix}",
        "--email",
        "ops@acme.example",
        "--plan",
        f"pro-{suffix}",
    ).stdout.strip()
    assert account_id.isdigit()
    listed = json.loads(saas("accounts", "list", "--json").stdout)
    assert {"id": int(account_id), "name": f"acme-{suffix}"}.items() <= next(
        a for a in listed if a["id"] == int(account_id)
    ).items()

    # By name, plain output: the key is the last line of stdout.
    plain = saas("keys", "create", f"acme-{suffix}", "--name", "ci").stdout
    key = plain.strip().splitlines()[-1]
    assert key_format.is_well_formed(key)
    # By id, JSON output.
    created = json.loads(saas("keys", "create", account_id, "--json").stdout)
    assert {"id", "prefix", "key"} <= created.keys()
    assert created["key"].startswith(created["prefix"])

    keys = json.loads(saas("keys", "list", account_id, "--json").stdout)
    assert [k["prefix"] for k in keys] == [key[:14], created["prefix"]]
    listing = json.dumps(keys) + saas("keys", "list", account_id).stdout
    assert key not in listing and key_format.hash_key(key) not in listing  # never the secret

    headers = {"X-API-Key": key}
    assert client.get("/v1/models", headers=headers).status_code == 200
    saas("keys", "revoke", str(keys[0]["id"]))
    assert json.loads(saas("keys", "list", account_id, "--json").stdout)[0]["revoked_at"]
    # A key never seen by the server is looked up fresh, so revocation shows at once.
    assert client.get("/v1/models", headers={"X-API-Key": created["key"]}).status_code == 200


def test_admin_scope_and_expiry_options(saas, client):
    suffix = uuid.uuid4().hex[:8]
    saas("plans", "create", f"ops-{suffix}", "--rate-limit", "10/second")
    saas("accounts", "create", f"ops-{suffix}", "--email", "a@b.c", "--plan", f"ops-{suffix}")
    admin = json.loads(saas("keys", "create", f"ops-{suffix}", "--scope", "admin", "--json").stdout)
    assert admin["scopes"] == ["admin"]
    assert client.get("/admin/plans", headers={"X-API-Key": admin["key"]}).status_code == 200
    expired = json.loads(
        saas(
            "keys", "create", f"ops-{suffix}", "--expires-at", "2001-01-01T00:00:00", "--json"
        ).stdout
    )
    response = client.get("/v1/models", headers={"X-API-Key": expired["key"]})
    assert response.status_code == 401 and "expired" in response.json()["detail"]
    # ISO 8601 as people write it: Z or an offset; stored and shown in UTC.
    zulu = json.loads(
        saas(
            "keys", "create", f"ops-{suffix}", "--expires-at", "2027-01-31T00:00:00Z", "--json"
        ).stdout
    )
    assert zulu["expires_at"] == "2027-01-31T00:00:00Z"
    offset = json.loads(
        saas(
            "keys", "create", f"ops-{suffix}", "--expires-at", "2027-01-31T02:00:00+02:00", "--json"
        ).stdout
    )
    assert offset["expires_at"] == "2027-01-31T00:00:00Z"


def test_errors_are_clear_and_exit_nonzero(saas, make_customer):
    bad_limit = saas("plans", "create", "x-bad", "--rate-limit", "lots", ok=False)
    assert bad_limit.returncode != 0 and "rate limit" in bad_limit.stderr
    no_plan = saas("accounts", "create", "nobody", "--email", "a@b.c", "--plan", "nope", ok=False)
    assert no_plan.returncode == 1 and "Plan 'nope' not found" in no_plan.stderr
    no_account = saas("keys", "create", "no-such-account", ok=False)
    assert no_account.returncode == 1 and "not found" in no_account.stderr
    owner = str(make_customer().account_id)
    bad_scope = saas("keys", "create", owner, "--scope", "root", ok=False)
    assert bad_scope.returncode == 1 and "Unknown scope(s): root" in bad_scope.stderr
    # The CLI checks what the admin API checks, with the same messages, never a traceback.
    long_name = saas("keys", "create", owner, "--name", "x" * 200, ok=False)
    assert long_name.returncode == 1 and "name" in long_name.stderr
    huge_grace = saas("keys", "roll", "1", "--grace-seconds", "10000000000000", ok=False)
    assert huge_grace.returncode == 1 and "grace_seconds" in huge_grace.stderr
    empty_models = saas(
        "plans", "create", "x-none", "--rate-limit", "1/second", "--models", "", ok=False
    )
    assert empty_models.returncode == 1 and "at least one model" in empty_models.stderr
    outputs = long_name.stderr + huge_grace.stderr + empty_models.stderr + bad_scope.stderr
    assert "Traceback" not in bad_limit.stderr + no_plan.stderr + no_account.stderr + outputs


def test_bootstrap_on_a_fresh_database_is_idempotent(tmp_path):
    """What `make run` does: migrate an empty database, create keys once, then reuse them."""
    env = {**os.environ, "SAAS_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}"}

    def bootstrap() -> str:
        result = subprocess.run([SAAS, "bootstrap"], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout

    first, second = bootstrap(), bootstrap()
    printed = [word for word in first.split() if word.startswith("sk_live_")]
    assert len(printed) == 2 and all(key_format.is_well_formed(k) for k in printed)
    assert "admin key exists" in second and "demo key exists" in second
    assert not any(key_format.is_well_formed(word) for word in second.split())


def test_usage_and_invoices_commands(saas, make_customer, settings):
    import csv
    import io

    from saas.kit.db import make_engine
    from saas.usage.ledger import write_events
    from tests.usage.test_metering import synthetic_events

    customer = make_customer(
        monthly_quota=5000, price_cents_per_month=2000, price_cents_per_1000_requests=100
    )
    engine = make_engine(settings.database_url)
    write_events(engine, synthetic_events(customer.account_id, 1001))
    write_events(engine, synthetic_events(customer.account_id, 3, billable=False))
    engine.dispose()
    month = months.current()

    report = json.loads(saas("usage", customer.account_name, "--json").stdout)
    assert report["billable_requests"] == 1001 and report["requests"] == 1004
    assert report["remaining_quota"] == 3999 and report["month"] == month
    assert "1001 billable requests" in saas("usage", str(customer.account_id)).stdout

    lines = json.loads(saas("invoices", "--month", month).stdout)["invoices"]
    line = next(x for x in lines if x["account_id"] == customer.account_id)
    assert (line["billable_requests"], line["metered_cents"], line["total_cents"]) == (
        1001,
        101,
        2101,
    )
    rows = list(
        csv.DictReader(io.StringIO(saas("invoices", "--month", month, "--format", "csv").stdout))
    )
    row = next(r for r in rows if int(r["account_id"]) == customer.account_id)
    assert row["total_cents"] == "2101" and row["plan"] == customer.plan_name

    bad = saas("invoices", "--month", "2026-13", ok=False)
    assert bad.returncode == 1 and "Not a month" in bad.stderr


def test_cli_mirrors_admin_writes_with_audit(saas, client, make_customer):
    customer = make_customer()
    rolled = json.loads(
        saas("keys", "roll", str(customer.key_id), "--grace-seconds", "0", "--json").stdout
    )
    assert key_format.is_well_formed(rolled["key"])
    assert client.get("/v1/models", headers={"X-API-Key": rolled["key"]}).status_code == 200
    old = client.get("/v1/models", headers=customer.headers)
    assert old.status_code == 401  # grace 0: the old key expired at once (and was never cached)

    updated = json.loads(
        saas("accounts", "update", customer.account_name, "--status", "suspended", "--json").stdout
    )
    assert updated["status"] == "suspended"
    assert saas(
        "accounts", "update", customer.account_name, "--status", "gone", ok=False
    ).returncode
    entries = json.loads(saas("audit", "--via", "cli", "--json", "--limit", "200").stdout)
    targets = {("key", str(customer.key_id)), ("account", str(customer.account_id))}
    mine = [e for e in entries if (e["object_type"], e["object_id"]) in targets]
    assert sorted(e["action"] for e in mine) == ["account.update", "key.roll"]
    assert all(e["actor_key_id"] is None and e["actor_name"] == getpass.getuser() for e in mine)


def test_every_cli_write_is_audited_exactly_once(saas):
    name = f"audited-{uuid.uuid4().hex[:8]}"
    saas("plans", "create", name, "--rate-limit", "10/second")
    saas("plans", "update", name, "--monthly-quota", "100")
    account = saas("accounts", "create", name, "--email", "ops@acme.example", "--plan", name)
    account_id = account.stdout.strip()
    saas("accounts", "update", account_id, "--status", "suspended")
    saas("accounts", "update", account_id, "--status", "active")
    saas("accounts", "webhook", account_id, "https://hooks.acme.example/quota")
    first = json.loads(saas("keys", "create", account_id, "--json").stdout)
    saas("keys", "revoke", str(first["id"]))
    saas("keys", "revoke", str(first["id"]))  # already revoked: nothing changes, nothing recorded
    second = json.loads(saas("keys", "create", account_id, "--scope", "admin", "--json").stdout)
    rolled = json.loads(saas("keys", "roll", str(second["id"]), "--json").stdout)

    entries = json.loads(saas("audit", "--json", "--limit", "1000").stdout)
    objects = {
        ("plan", name),
        ("account", account_id),
        ("key", str(first["id"])),
        ("key", str(second["id"])),
        ("key", str(rolled["id"])),
    }
    mine = [e for e in entries if (e["object_type"], e["object_id"]) in objects]
    assert sorted((e["action"], e["object_type"], e["object_id"]) for e in mine) == sorted(
        [
            ("plan.create", "plan", name),
            ("plan.update", "plan", name),
            ("account.create", "account", account_id),
            ("account.update", "account", account_id),
            ("account.update", "account", account_id),
            ("account.webhook", "account", account_id),
            ("key.create", "key", str(first["id"])),
            ("key.revoke", "key", str(first["id"])),
            ("key.create", "key", str(second["id"])),
            ("key.roll", "key", str(second["id"])),
        ]
    )
    user = getpass.getuser()
    assert all((e["via"], e["actor_name"], e["actor_key_id"]) == ("cli", user, None) for e in mine)
    roll = next(e for e in mine if e["action"] == "key.roll")
    assert roll["changes"] == {"new_key_id": rolled["id"], "grace_seconds": 3600}
    # Plain output names the actor too.
    plain = saas("audit", "--object-type", "plan", "--object-id", name).stdout
    assert "plan.create" in plain and user in plain


def test_plan_models_must_be_served(saas, client, make_customer):
    suffix = uuid.uuid4().hex[:8]
    unknown = saas(
        "plans", "create", f"p-{suffix}", "--rate-limit", "1/second", "--models", "nope", ok=False
    )
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert "nope" in unknown.stderr
    assert "en_core_web_sm" in unknown.stderr and "fr_core_news_sm" in unknown.stderr
    assert f"p-{suffix}" not in saas("plans", "list").stdout

    every = json.loads(
        saas(
            "plans",
            "create",
            f"all-{suffix}",
            "--rate-limit",
            "1/second",
            "--models",
            "all",
            "--json",
        ).stdout
    )
    assert every["models"] is None  # all models, not one called "all"
    french = json.loads(
        saas("plans", "update", f"all-{suffix}", "--models", "fr_core_news_sm", "--json").stdout
    )
    assert french["models"] == ["fr_core_news_sm"]
    back = json.loads(saas("plans", "update", f"all-{suffix}", "--models", "all", "--json").stdout)
    assert back["models"] is None
    refused = saas("plans", "update", f"all-{suffix}", "--models", "en_core_web_sm,nope", ok=False)
    assert refused.returncode == 1 and "nope" in refused.stderr

    admin = make_customer(scopes=("admin",))
    api = client.post(
        "/admin/plans",
        headers=admin.headers,
        json={"name": f"api-{suffix}", "rate_limit": "1/second", "models": ["nope"]},
    )
    assert api.status_code == 422 and "en_core_web_sm" in api.json()["detail"]


def test_plans_update_command(saas, client, make_customer):
    customer = make_customer(monthly_quota=5)
    plan = json.loads(
        saas(
            "plans",
            "update",
            customer.plan_name,
            "--rate-limit",
            "2/minute",
            "--unlimited",
            "--json",
        ).stdout
    )
    assert plan["rate_limit"] == "2/minute" and plan["monthly_quota"] is None
    bad = saas("plans", "update", customer.plan_name, "--rate-limit", "lots", ok=False)
    assert bad.returncode == 1 and "rate limit" in bad.stderr
    statuses = [client.get("/v1/models", headers=customer.headers).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # never cached before: the new plan applies at once


def test_plans_max_batch_texts(saas, client):
    suffix = uuid.uuid4().hex[:8]
    name = f"batch-{suffix}"
    plan = json.loads(
        saas(
            "plans",
            "create",
            name,
            "--rate-limit",
            "100/minute",
            "--max-batch-texts",
            "7",
            "--json",
        ).stdout
    )
    assert plan["max_batch_texts"] == 7
    header, *rows = saas("plans", "list").stdout.splitlines()
    column = header.split().index("max_batch_texts")
    assert next(row.split() for row in rows if name in row)[column] == "7"
    default = json.loads(
        saas("plans", "create", f"{name}-d", "--rate-limit", "1/second", "--json").stdout
    )
    assert default["max_batch_texts"] == 32
    zero = ("--rate-limit", "1/second", "--max-batch-texts", "0")
    assert saas("plans", "create", f"{name}-z", *zero, ok=False).returncode != 0

    saas("accounts", "create", name, "--email", "a@b.c", "--plan", name)
    key = saas("keys", "create", name).stdout.strip().splitlines()[-1]
    updated = json.loads(saas("plans", "update", name, "--max-batch-texts", "2", "--json").stdout)
    assert updated["max_batch_texts"] == 2
    assert saas("plans", "update", name, "--max-batch-texts", "0", ok=False).returncode != 0
    # A key the server has never seen is looked up fresh: the new maximum applies.
    url = "/v1/en_core_web_sm/tokens/batch"
    headers = {"X-API-Key": key}
    refused = client.post(url, headers=headers, json={"texts": ["a", "b", "c"]})
    assert refused.status_code == 413 and "at most 2" in refused.json()["detail"]
    assert client.post(url, headers=headers, json={"texts": ["a", "b"]}).status_code == 200
    entry = next(
        e
        for e in json.loads(
            saas("audit", "--action", "plan.update", "--limit", "1000", "--json").stdout
        )
        if e["object_id"] == name
    )
    assert entry["changes"]["before"] == {"max_batch_texts": 7}
    assert entry["changes"]["after"] == {"max_batch_texts": 2}
