"""`saas serve`, `saas migrate`, `saas bootstrap`: running the service."""

from typing import Annotated

import typer

from saas.cli.session import cli_actor, db_session, known_models
from saas.config import get_settings


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(migrate)
    app.command("bootstrap")(bootstrap)


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


def migrate() -> None:
    """Apply database migrations (idempotent)."""
    from saas.migrations import upgrade

    upgrade(get_settings().database_url)
    typer.echo("database is up to date")


def bootstrap() -> None:
    """Migrate, then make sure an admin key and a demo customer exist (keys printed once)."""
    from saas import bootstrap as defaults
    from saas.migrations import upgrade

    upgrade(get_settings().database_url)
    with db_session() as session:
        lines = defaults.ensure_defaults(session, known_models(), cli_actor())
    for line in lines:
        typer.echo(line)
