"""`saas accounts`: create, list, show, update accounts and set their quota-alert webhook."""

from typing import Annotated

import typer

from saas.accounts import service
from saas.accounts.schemas import (
    AccountCreate,
    AccountPublic,
    AccountUpdate,
    WebhookCreated,
    WebhookSet,
)
from saas.cli.output import JsonFlag, emit_json, listing
from saas.cli.session import build, cli_actor, db_session
from saas.config import get_settings

app = typer.Typer(help="Customer accounts.", no_args_is_help=True)
COLUMNS = ["id", "name", "email", "plan", "status", "webhook", "created_at"]
AccountArgument = Annotated[str, typer.Argument(help="Account id or name.")]


@app.command("create")
def create(
    name: str,
    email: Annotated[str, typer.Option()],
    plan: Annotated[str, typer.Option(help="Plan name.")],
    as_json: JsonFlag = False,
) -> None:
    """Create an account (audited); prints its id."""
    data = build(AccountCreate, name=name, email=email, plan=plan)
    with db_session() as session:
        account = service.create_account(session=session, data=data, actor=cli_actor())
        result = AccountPublic.of(account, service.plan_of(session, account))
    if as_json:
        emit_json(result)
    else:
        typer.echo(result.id)


@app.command("list")
def list_(
    search: Annotated[str | None, typer.Option(help="Part of the name or e-mail.")] = None,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    limit: Annotated[int, typer.Option(min=1)] = 1000,
    as_json: JsonFlag = False,
) -> None:
    with db_session() as session:
        _, page = service.search_accounts(session, search=search, offset=offset, limit=limit)
        rows = [AccountPublic.of(account, plan) for account, plan in page]
    listing(rows, COLUMNS, as_json)


@app.command("show")
def show(account: AccountArgument, as_json: JsonFlag = False) -> None:
    with db_session() as session:
        found = service.find_account(session, account)
        result = AccountPublic.of(found, service.plan_of(session, found))
    if as_json:
        emit_json(result)
    else:
        listing([result], COLUMNS, as_json=False)


@app.command("update")
def update(
    account: AccountArgument,
    plan: Annotated[str | None, typer.Option(help="Move to this plan.")] = None,
    status: Annotated[str | None, typer.Option(help="active or suspended")] = None,
    email: Annotated[str | None, typer.Option()] = None,
    as_json: JsonFlag = False,
) -> None:
    """Change plan or e-mail, suspend or resume (audited); workers apply it within a second."""
    fields = {k: v for k, v in {"plan": plan, "status": status, "email": email}.items() if v}
    changes = build(AccountUpdate, **fields)
    with db_session() as session:
        account_id = service.find_account(session, account).id
        assert account_id is not None
        updated = service.update_account(
            session=session, account_id=account_id, changes=changes, actor=cli_actor()
        )
        result = AccountPublic.of(updated, service.plan_of(session, updated))
    if as_json:
        emit_json(result)
    else:
        typer.echo(f"updated account {result.name}: {fields}")


@app.command("webhook")
def webhook(
    account: AccountArgument,
    url: Annotated[str, typer.Argument(help="https://... to POST quota alerts to; '' removes it.")],
    as_json: JsonFlag = False,
) -> None:
    """Set where quota alerts (80% and 100%) go (audited); prints the new signing secret once."""
    target = build(WebhookSet, url=url or None).url
    with db_session() as session:
        account_id = service.find_account(session, account).id
        assert account_id is not None
        secret = service.set_webhook(
            session=session,
            account_id=account_id,
            url=str(target) if target is not None else None,
            actor=cli_actor(),
            allow_private=get_settings().webhook_allow_private,
        )
    if as_json:
        emit_json(WebhookCreated(url=str(target) if target is not None else None, secret=secret))
    elif secret:
        typer.echo("signing secret (shown once; verify X-Signature with it):")
        typer.echo(secret)
    else:
        typer.echo("webhook removed")
