"""`saas plans`: create, update and list plans (the admin API's /admin/plans)."""

from typing import Annotated, Any

import typer

from saas.accounts import service
from saas.accounts.schemas import PlanCreate, PlanPublic, PlanUpdate
from saas.cli.output import JsonFlag, emit_json, listing
from saas.cli.session import build, cli_actor, db_session, known_models

app = typer.Typer(help="Plans: rate limits, quotas, models, prices.", no_args_is_help=True)
COLUMNS = [
    "id",
    "name",
    "rate_limit",
    "monthly_quota",
    "max_text_chars",
    "max_batch_texts",
    "max_keys",
    "models",
    "price_cents_per_month",
    "price_cents_per_1000_requests",
]
ModelsOption = Annotated[
    str | None,
    typer.Option(help="Comma-separated model names, or 'all' (every model the service runs)."),
]


def parse_models(value: str) -> list[str] | None:
    """'all' -> None (every model); otherwise the comma-separated names, which the service
    checks against the models it runs."""
    if value.strip().lower() == "all":
        return None
    return [name.strip() for name in value.split(",") if name.strip()]


def show(plan: PlanPublic, as_json: bool) -> None:
    if as_json:
        emit_json(plan)
    else:
        listing([plan], COLUMNS, as_json=False)


@app.command("create")
def create(
    name: str,
    rate_limit: Annotated[str, typer.Option(help='e.g. "60/minute" or "5/second;100/minute"')],
    monthly_quota: Annotated[int | None, typer.Option(min=0)] = None,
    max_text_chars: Annotated[int, typer.Option(min=1)] = 100_000,
    models: ModelsOption = "all",
    price_cents_per_month: Annotated[int, typer.Option(min=0)] = 0,
    price_cents_per_1000_requests: Annotated[int, typer.Option(min=0)] = 0,
    max_keys: Annotated[int, typer.Option(min=0, help="Keys a customer may hold.")] = 10,
    max_batch_texts: Annotated[
        int, typer.Option(min=1, help="Most texts in one batch request.")
    ] = 32,
    as_json: JsonFlag = False,
) -> None:
    """Create a plan (audited)."""
    data = build(
        PlanCreate,
        name=name,
        rate_limit=rate_limit,
        monthly_quota=monthly_quota,
        max_text_chars=max_text_chars,
        models=parse_models("all" if models is None else models),
        price_cents_per_month=price_cents_per_month,
        price_cents_per_1000_requests=price_cents_per_1000_requests,
        max_keys=max_keys,
        max_batch_texts=max_batch_texts,
    )
    with db_session() as session:
        plan = PlanPublic.of(
            service.create_plan(
                session=session, data=data, actor=cli_actor(), known_models=known_models()
            )
        )
    if as_json:
        emit_json(plan)
    else:
        typer.echo(f"created plan {plan.name} (id {plan.id})")


@app.command("update")
def update(
    name: str,
    rate_limit: Annotated[str | None, typer.Option()] = None,
    monthly_quota: Annotated[int | None, typer.Option(min=0)] = None,
    unlimited: Annotated[bool, typer.Option(help="Remove the monthly quota.")] = False,
    max_text_chars: Annotated[int | None, typer.Option(min=1)] = None,
    models: ModelsOption = None,
    price_cents_per_month: Annotated[int | None, typer.Option(min=0)] = None,
    price_cents_per_1000_requests: Annotated[int | None, typer.Option(min=0)] = None,
    max_keys: Annotated[int | None, typer.Option(min=0)] = None,
    max_batch_texts: Annotated[int | None, typer.Option(min=1)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a plan (audited); running workers apply it within a second."""
    fields: dict[str, Any] = {
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
        fields["monthly_quota"] = None
    if models is not None:
        fields["models"] = parse_models(models)
    changes = build(PlanUpdate, **fields)
    with db_session() as session:
        plan = PlanPublic.of(
            service.update_plan(
                session=session,
                name=name,
                changes=changes,
                actor=cli_actor(),
                known_models=known_models(),
            )
        )
    if as_json:
        emit_json(plan)
    else:
        typer.echo(f"updated plan {name}: {fields}")


@app.command("list")
def list_(as_json: JsonFlag = False) -> None:
    with db_session() as session:
        plans = [PlanPublic.of(plan) for plan in service.list_plans(session)]
    listing(plans, COLUMNS, as_json)


@app.command("show")
def show_command(name: str, as_json: JsonFlag = False) -> None:
    with db_session() as session:
        plan = PlanPublic.of(service.get_plan(session, name))
    show(plan, as_json)
