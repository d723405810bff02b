"""`saas keys`: create, list, revoke and roll API keys (the admin API's key routes)."""

from typing import Annotated

import typer

from saas.accounts import service as accounts
from saas.cli.output import JsonFlag, emit_json, listing
from saas.cli.session import build, cli_actor, db_session
from saas.keys import service
from saas.keys.schemas import KeyCreate, KeyCreated, KeyPublic, KeyRoll
from saas.kit.db import utcnow

app = typer.Typer(help="API keys.", no_args_is_help=True)
COLUMNS = ["id", "prefix", "name", "scopes", "status", "expires_at", "last_used_at"]
AccountArgument = Annotated[str, typer.Argument(help="Account id or name.")]


def print_new_key(created: KeyCreated, as_json: bool, headline: str) -> None:
    """The plaintext key: in the JSON, or as the last line of stdout."""
    if as_json:
        emit_json(created)
        return
    typer.echo(headline)
    typer.echo("store it now, it is not shown again:")
    typer.echo(created.key)


@app.command("create")
def create(
    account: AccountArgument,
    name: str = "",
    scope: Annotated[list[str] | None, typer.Option(help="Repeatable, e.g. --scope admin.")] = None,
    expires_at: Annotated[
        str | None,
        typer.Option(
            help="ISO 8601 time when the key stops working: 2027-01-31T00:00:00Z, an offset"
            " such as +02:00, or none for UTC."
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a key (audited). The plaintext is printed once, as the last line of stdout."""
    data = build(KeyCreate, name=name, scopes=scope or [], expires_at=expires_at)
    with db_session() as session:
        owner = accounts.find_account(session, account)
        assert owner.id is not None
        key, plaintext = service.create_key(
            session=session,
            account_id=owner.id,
            actor=cli_actor(),
            name=data.name,
            scopes=data.scopes,
            expires_at=data.expires_at,
        )
        created = KeyCreated.of_new(key, plaintext, utcnow())
        owner_name = owner.name
    headline = f"created key {created.id} ({created.prefix}...) for account {owner_name}"
    print_new_key(created, as_json, headline)


@app.command("list")
def list_(account: AccountArgument, as_json: JsonFlag = False) -> None:
    """An account's keys: never their secrets or hashes."""
    with db_session() as session:
        owner = accounts.find_account(session, account)
        assert owner.id is not None
        keys = KeyPublic.listing(service.list_keys(session, owner.id))
    listing(keys, COLUMNS, as_json)


@app.command("revoke")
def revoke(key_id: int, as_json: JsonFlag = False) -> None:
    """Revoke a key (audited); running workers are told at once when SAAS_REDIS_URL is set."""
    with db_session() as session:
        key = KeyPublic.of(
            service.revoke_key(session=session, key_id=key_id, actor=cli_actor()), utcnow()
        )
    if as_json:
        emit_json(key)
    else:
        typer.echo(f"key {key_id} is revoked")


@app.command("roll")
def roll(
    key_id: int,
    grace_seconds: Annotated[int, typer.Option(help="0 to 2592000 (30 days).")] = 3600,
    as_json: JsonFlag = False,
) -> None:
    """A new key at once (audited); the old one works for --grace-seconds more. New key: last
    line."""
    grace = build(KeyRoll, grace_seconds=grace_seconds).grace_seconds
    with db_session() as session:
        key, plaintext = service.roll_key(
            session=session, key_id=key_id, grace_seconds=grace, actor=cli_actor()
        )
        created = KeyCreated.of_new(key, plaintext, utcnow())
    headline = f"key {key_id} stops working in {grace_seconds} s; new key {created.id}"
    print_new_key(created, as_json, headline)
