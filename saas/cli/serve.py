"""`saas serve`, `saas migrate`, `saas bootstrap`: running the service."""

import os
import tempfile
from contextlib import ExitStack
from typing import Annotated

import typer

from saas.cli.session import cli_actor, db_session, known_models
from saas.config import get_settings

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus-client in every worker


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
    """Serve the API with Uvicorn (each worker loads the models in its own inference process).

    With several workers, /metrics adds up all of them: in PROMETHEUS_MULTIPROC_DIR (emptied
    first) if set, else in a temporary directory removed at exit."""
    # Uvicorn picks uvloop and httptools (installed with uvicorn[standard]) by itself. There is
    # no Gunicorn-style preload: the models live in each worker's spawned inference process, so
    # importing the app before forking would share nothing that matters.
    import uvicorn

    from saas.kit import metrics
    from saas.kit.logging import logging_config
    from saas.server.protocol import uvicorn_options

    settings = get_settings()
    with ExitStack() as cleanup:
        if os.environ.get(MULTIPROC_DIR):
            metrics.prepare_multiprocess_dir(os.environ[MULTIPROC_DIR])
        elif workers > 1:
            # Set before any worker starts (they are spawned: they inherit the environment).
            temporary = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="saas-metrics-"))
            os.environ[MULTIPROC_DIR] = temporary
        uvicorn.run(
            "saas.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            root_path=settings.root_path,
            access_log=False,  # our request-context middleware logs each request once
            # Uvicorn's own lines in the app's format (JSON with SAAS_LOG_JSON=true), on stderr.
            log_config=logging_config(settings.log_level, settings.log_json),
            log_level=settings.log_level.lower(),
            # The protocol with its limits, keep-alive, trusted proxies: as under Gunicorn.
            **uvicorn_options(settings),
        )


def migrate() -> None:
    """Apply database migrations (idempotent)."""
    from saas.kit.migrations import upgrade

    upgrade(get_settings().database_url)
    typer.echo("database is up to date")


def bootstrap() -> None:
    """Migrate, then make sure an admin key and a demo customer exist (keys printed once)."""
    from saas.cli import bootstrap as defaults
    from saas.kit.migrations import upgrade

    upgrade(get_settings().database_url)
    with db_session() as session:
        lines = defaults.ensure_defaults(session, known_models(), cli_actor())
    for line in lines:
        typer.echo(line)
