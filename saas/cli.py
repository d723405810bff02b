"""`saas`: serve, migrate, and manage plans, accounts and keys. Scriptable: every create and list
command takes --json, and `keys create` prints the plaintext key as its last line of stdout."""

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, NoReturn

import typer
from sqlmodel import Session

from saas import bootstrap
from saas.accounts import service as accounts
from saas.accounts.models import Account, PlanCreate
from saas.config import get_settings
from saas.db import as_utc, make_engine, utcnow
from saas.keys import service as keys
from saas.keys.models import ApiKey
from saas.keys.schemas import KeyPublic

# No pretty tracebacks: they print local variables, and a local may be a plaintext key.
app = typer.Typer(
    help="spaCy API operations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
plans_app = typer.Typer(help="Plans: rate limits, quotas, prices.", no_args_is_help=True)
accounts_app = typer.Typer(help="Customer accounts.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(plans_app, name="plans")
app.add_typer(accounts_app, name="accounts")
app.add_typer(keys_app, name="keys")

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@contextmanager
def db_session() -> Iterator[Session]:
    engine = make_engine(get_settings().database_url)
    try:
        with Session(engine) as session:
            yield session
            session.commit()
    finally:
        engine.dispose()


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def account_or_fail(session: Session, id_or_name: str) -> Account:
    owner = accounts.find_account(session, id_or_name)
    if owner is None:
        fail(f"account {id_or_name!r} does not exist")
    return owner


def check_month(month: str) -> None:
    from saas.usage.service import month_bounds

    try:
        month_bounds(month)
    except ValueError:
        fail(f"not a month: {month!r} (use YYYY-MM)")


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(value, default=str, indent=2))


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="One per CPU core: each runs an inference process.")
    ] = 1,
) -> None:
    """Serve the API with Uvicorn (each worker loads the models in its own inference process)."""
    # Uvicorn picks uvloop and httptools (installed with uvicorn[standard]) by itself. There is
    # no Gunicorn-style preload: the models live in each worker's spawned inference process, so
    # importing the app before forking would share nothing that matters.
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "saas.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        root_path=settings.root_path,
        access_log=False,  # our request-context middleware logs each request once
        loop="auto",
        http="auto",
        proxy_headers=True,
        log_level=settings.log_level.lower(),
    )


@app.command()
def migrate() -> None:
    """Apply database migrations (idempotent)."""
    from saas.migrations import upgrade

    upgrade(get_settings().database_url)
    typer.echo("database is up to date")


@app.command("bootstrap")
def bootstrap_command() -> None:
    """Migrate, then make sure an admin key and a demo customer exist (keys printed once)."""
    from saas.migrations import upgrade

    upgrade(get_settings().database_url)
    with db_session() as session:
        for line in bootstrap.ensure_defaults(session):
            typer.echo(line)


def plan_dict(plan: Any) -> dict[str, Any]:
    return plan.model_dump(exclude={"created_at"})


@plans_app.command("create")
def plans_create(
    name: str,
    rate_limit: Annotated[str, typer.Option(help='e.g. "60/minute" or "5/second;100/minute"')],
    monthly_quota: Annotated[int | None, typer.Option(min=0)] = None,
    max_text_chars: Annotated[int, typer.Option(min=1)] = 100_000,
    models: Annotated[
        str | None, typer.Option(help="Comma-separated model names (default: all).")
    ] = None,
    price_cents_per_month: Annotated[int, typer.Option(min=0)] = 0,
    price_cents_per_1000_requests: Annotated[int, typer.Option(min=0)] = 0,
    max_batch_texts: Annotated[
        int, typer.Option(min=1, help="Most texts in one batch request.")
    ] = 32,
    as_json: JsonFlag = False,
) -> None:
    try:
        data = PlanCreate(
            name=name,
            rate_limit=rate_limit,
            monthly_quota=monthly_quota,
            max_text_chars=max_text_chars,
            models=[m.strip() for m in models.split(",") if m.strip()] if models else None,
            price_cents_per_month=price_cents_per_month,
            price_cents_per_1000_requests=price_cents_per_1000_requests,
            max_batch_texts=max_batch_texts,
        )
    except ValueError as exc:
        fail(str(exc))
    with db_session() as session:
        try:
            plan = accounts.create_plan(session, data)
        except accounts.Conflict as exc:
            fail(str(exc))
        result = plan_dict(plan)
    if as_json:
        emit_json(result)
    else:
        typer.echo(f"created plan {result['name']} (id {result['id']})")


@plans_app.command("list")
def plans_list(as_json: JsonFlag = False) -> None:
    with db_session() as session:
        rows = [plan_dict(p) for p in accounts.list_plans(session)]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        quota = row["monthly_quota"] if row["monthly_quota"] is not None else "unlimited"
        typer.echo(
            f"{row['id']}\t{row['name']}\t{row['rate_limit']}\tquota={quota}"
            f"\tmax_text_chars={row['max_text_chars']}\tmax_batch_texts={row['max_batch_texts']}"
            f"\tmodels={row['models'] or 'all'}"
        )


def account_dict(account: Any) -> dict[str, Any]:
    return account.model_dump()


@accounts_app.command("create")
def accounts_create(
    name: str,
    email: Annotated[str, typer.Option()],
    plan: Annotated[str, typer.Option(help="Plan name.")],
    as_json: JsonFlag = False,
) -> None:
    """Create an account; prints its id."""
    with db_session() as session:
        try:
            account = accounts.create_account(session, name=name, email=email, plan_name=plan)
        except (accounts.Conflict, accounts.Missing) as exc:
            fail(str(exc))
        result = account_dict(account)
    if as_json:
        emit_json(result)
    else:
        typer.echo(result["id"])


@accounts_app.command("list")
def accounts_list(as_json: JsonFlag = False) -> None:
    with db_session() as session:
        rows = [account_dict(a) for a in accounts.list_accounts(session)]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        typer.echo(
            f"{row['id']}\t{row['name']}\t{row['email']}\tplan={row['plan_id']}\t{row['status']}"
        )


def key_dict(key: ApiKey) -> dict[str, Any]:
    """Everything about a key but its secret and hash (the admin API's shape)."""
    return KeyPublic.of(key, utcnow()).model_dump()


@keys_app.command("create")
def keys_create(
    account: Annotated[str, typer.Argument(help="Account id or name.")],
    name: str = "",
    scope: Annotated[list[str] | None, typer.Option(help="Repeatable, e.g. --scope admin.")] = None,
    expires_at: Annotated[
        datetime | None,
        typer.Option(help="ISO 8601 time (UTC if no offset) when the key stops working."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a key. The plaintext is printed once, as the last line of stdout."""
    with db_session() as session:
        owner = account_or_fail(session, account)
        try:
            key, plaintext = keys.create_key(
                session, owner, name=name, scopes=scope or (), expires_at=as_utc(expires_at)
            )
        except ValueError as exc:
            fail(str(exc))
        result = key_dict(key)
        owner_name = owner.name
    if as_json:
        emit_json({**result, "key": plaintext})
        return
    typer.echo(f"created key {result['id']} ({result['prefix']}...) for account {owner_name}")
    typer.echo("store it now, it is not shown again:")
    typer.echo(plaintext)


@keys_app.command("list")
def keys_list(
    account: Annotated[str, typer.Argument(help="Account id or name.")],
    as_json: JsonFlag = False,
) -> None:
    with db_session() as session:
        owner = account_or_fail(session, account)
        rows = [key_dict(k) for k in keys.list_keys(session, owner.id)]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        fields = [
            row["id"],
            f"{row['prefix']}...",
            row["name"] or "-",
            ",".join(row["scopes"]) or "-",
            row["status"],
            f"expires={row['expires_at'] or 'never'}",
            f"last_used={row['last_used_at'] or 'never'}",
        ]
        typer.echo("\t".join(str(field) for field in fields))


@keys_app.command("revoke")
def keys_revoke(key_id: int) -> None:
    """Revoke a key; running workers are told at once when SAAS_REDIS_URL is set."""
    from saas.audit import service as audit

    with db_session() as session:
        key = keys.revoke_key(session, key_id)
        if key is None:
            fail(f"key {key_id} does not exist")
        audit.record(session, None, "key.revoke", "key", key_id, {"via": "cli"})
        key_hash = key.key_hash
    tell_workers("key", key_hash)
    typer.echo(f"revoked key {key_id}")


@accounts_app.command("webhook")
def accounts_webhook(
    account: Annotated[str, typer.Argument(help="Account id or name.")],
    url: Annotated[str, typer.Argument(help="https://... to POST quota alerts to; '' removes it.")],
) -> None:
    """Set where quota alerts (80% and 100%) go; prints the new signing secret once."""
    with db_session() as session:
        owner = account_or_fail(session, account)
        owner.webhook_url = url or None
        owner.webhook_secret = secrets.token_hex(32) if url else None
        secret = owner.webhook_secret
        session.add(owner)
        account_id = owner.id
    tell_workers("account", account_id)  # cached keys carry whether the account wants alerts
    if secret:
        typer.echo("signing secret (shown once; verify X-Signature with it):")
        typer.echo(secret)
    else:
        typer.echo("webhook removed")


@app.command("usage")
def usage_command(
    account: Annotated[str, typer.Argument(help="Account id or name.")],
    month: Annotated[str | None, typer.Option(help="YYYY-MM (default: this month, UTC).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """An account's usage for a month: billable requests, characters, by endpoint and day."""
    from saas.accounts.models import Plan
    from saas.usage import service as usage

    month = month or usage.current_month()
    check_month(month)
    with db_session() as session:
        owner = account_or_fail(session, account)
        report = usage.account_month_usage(session, owner, session.get(Plan, owner.plan_id), month)
    if as_json:
        emit_json(report)
        return
    quota = report["plan"]["monthly_quota"]
    typer.echo(
        f"{report['account']} {month}: {report['billable_requests']} billable requests"
        f" of {quota if quota is not None else 'unlimited'}, {report['requests']} requests,"
        f" {report['characters']} characters"
    )
    for row in report["by_endpoint"]:
        typer.echo(
            f"  {row['endpoint']}\t{row['billable_requests']} billable\t{row['requests']} all"
        )


@app.command("invoices")
def invoices_command(
    month: Annotated[str, typer.Option(help="YYYY-MM")],
    format: Annotated[str, typer.Option(help="json or csv")] = "json",
) -> None:
    """One invoice line per account for the month."""
    from saas.usage import service as usage
    from saas.usage.routes import to_csv

    if format not in ("json", "csv"):
        fail("--format is json or csv")
    check_month(month)
    with db_session() as session:
        lines = usage.invoices(session, month)
    if format == "json":
        emit_json({"month": month, "invoices": lines})
    else:
        typer.echo(to_csv(lines), nl=False)


def tell_workers(kind: str, value: str | int) -> None:
    from saas.keys.invalidation import publish_from_cli

    settings = get_settings()
    try:
        sent = publish_from_cli(settings.redis_url, settings.redis_prefix, kind, value)
    except Exception as exc:  # noqa: BLE001 - the change is committed; only the broadcast failed
        typer.echo(
            f"warning: workers not notified ({type(exc).__name__}); "
            f"they apply it within SAAS_KEY_CACHE_TTL",
            err=True,
        )
        return
    if not sent:
        typer.echo(
            "note: no SAAS_REDIS_URL; a running server applies this within "
            "SAAS_KEY_CACHE_TTL seconds",
            err=True,
        )


@accounts_app.command("update")
def accounts_update(
    account: Annotated[str, typer.Argument(help="Account id or name.")],
    plan: Annotated[str | None, typer.Option(help="Move to this plan.")] = None,
    status: Annotated[str | None, typer.Option(help="active or suspended")] = None,
    email: Annotated[str | None, typer.Option()] = None,
    as_json: JsonFlag = False,
) -> None:
    """Change plan or e-mail, suspend or resume (mirrors PATCH /admin/accounts/{id})."""
    from saas.accounts.models import AccountStatus
    from saas.audit import service as audit

    if status is not None and status not in {s.value for s in AccountStatus}:
        fail("--status is active or suspended")
    with db_session() as session:
        owner = account_or_fail(session, account)
        changes = {k: v for k, v in {"plan": plan, "status": status, "email": email}.items() if v}
        try:
            before = accounts.update_account(session, owner, changes)
        except accounts.Missing as exc:
            fail(str(exc))
        audit.record(
            session,
            None,
            "account.update",
            "account",
            owner.id,
            {"before": before, "after": changes, "via": "cli"},
        )
        result = account_dict(owner)
    tell_workers("account", result["id"])
    if as_json:
        emit_json(result)
    else:
        typer.echo(f"updated account {result['name']}: {changes}")


@keys_app.command("roll")
def keys_roll(
    key_id: int,
    grace_seconds: Annotated[int, typer.Option(min=0)] = 3600,
    as_json: JsonFlag = False,
) -> None:
    """A new key at once; the old one works for --grace-seconds more. New key: last line."""
    from saas.audit import service as audit

    with db_session() as session:
        key = session.get(ApiKey, key_id)
        if key is None or key.revoked_at is not None:
            fail(f"key {key_id} does not exist or is revoked")
        new_key, plaintext = keys.roll_key(session, key, grace_seconds)
        audit.record(
            session,
            None,
            "key.roll",
            "key",
            key.id,
            {"new_key_id": new_key.id, "grace_seconds": grace_seconds, "via": "cli"},
        )
        result, old_hash = key_dict(new_key), key.key_hash
    tell_workers("key", old_hash)
    if as_json:
        emit_json({**result, "key": plaintext})
        return
    typer.echo(f"key {key_id} stops working in {grace_seconds} s; new key {result['id']}:")
    typer.echo(plaintext)


@app.command("audit")
def audit_command(
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    action: str | None = None,
    as_json: JsonFlag = False,
) -> None:
    """The newest admin writes (mirrors GET /admin/audit)."""
    from saas.audit import service as audit

    with db_session() as session:
        rows = [e.model_dump() for e in audit.search(session, action=action, limit=limit)]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        actor = f"key {row['actor_key_id']}" if row["actor_key_id"] else "cli"
        typer.echo(
            f"{row['at']}\t{actor}\t{row['action']}\t{row['object_type']} "
            f"{row['object_id']}\t{json.dumps(row['changes'], default=str)}"
        )


@plans_app.command("update")
def plans_update(
    name: str,
    rate_limit: Annotated[str | None, typer.Option()] = None,
    monthly_quota: Annotated[int | None, typer.Option(min=0)] = None,
    unlimited: Annotated[bool, typer.Option(help="Remove the monthly quota.")] = False,
    max_text_chars: Annotated[int | None, typer.Option(min=1)] = None,
    models: Annotated[
        str | None, typer.Option(help="Comma-separated; 'all' for every model.")
    ] = None,
    price_cents_per_month: Annotated[int | None, typer.Option(min=0)] = None,
    price_cents_per_1000_requests: Annotated[int | None, typer.Option(min=0)] = None,
    max_keys: Annotated[int | None, typer.Option(min=0)] = None,
    max_batch_texts: Annotated[int | None, typer.Option(min=1)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a plan (mirrors PATCH /admin/plans/{name}); workers apply it within a second."""
    from saas.audit import service as audit

    changes: dict[str, Any] = {
        field: value
        for field, value in {
            "rate_limit": rate_limit,
            "monthly_quota": monthly_quota,
            "max_text_chars": max_text_chars,
            "price_cents_per_month": price_cents_per_month,
            "price_cents_per_1000_requests": price_cents_per_1000_requests,
            "max_keys": max_keys,
            "max_batch_texts": max_batch_texts,
        }.items()
        if value is not None
    }
    if unlimited:
        changes["monthly_quota"] = None
    if models is not None:
        changes["models"] = None if models == "all" else [m.strip() for m in models.split(",")]
    with db_session() as session:
        plan = accounts.get_plan(session, name)
        if plan is None:
            fail(f"plan {name!r} does not exist")
        try:
            before = accounts.update_plan(session, plan, changes)
        except ValueError as exc:
            fail(str(exc))
        audit.record(
            session,
            None,
            "plan.update",
            "plan",
            name,
            {"before": before, "after": changes, "via": "cli"},
        )
        result = plan_dict(plan)
    tell_workers("plan", result["id"])
    if as_json:
        emit_json(result)
    else:
        typer.echo(f"updated plan {name}: {changes}")
