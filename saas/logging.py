"""Logging in one format: JSON lines (SAAS_LOG_JSON=true) or readable ones, on stderr.

The app logs with structlog (`configure_logging`, called by create_app). Gunicorn, Uvicorn and
libraries log with the standard library: `logging_config` is the `logging.config.dictConfig`
dict that renders their records with the same processors (structlog's ProcessorFormatter), so
that every line of a server, whoever wrote it, has the same shape: `event`, `level`, `logger`,
`timestamp`, plus the event's own fields. Gunicorn takes it as `logconfig_dict`, Uvicorn as
`log_config` (saas/cli/serve.py). Neither server's access log is kept: the app writes one line
per request (saas/middleware/request_context.py), with its route template, status, latency,
request id and account id.
"""

import json
import logging
import sys
from typing import Any

import orjson
import structlog
from structlog.typing import Processor

# Levels below which nothing goes out: the access loggers of both servers stay silent (and
# Uvicorn, seeing no handler, does not even format its access lines).
_SILENT = "CRITICAL"


def _level(level: str) -> int:
    return logging.getLevelNamesMapping().get(level.upper(), logging.INFO)


def _timestamper() -> Processor:
    return structlog.processors.TimeStamper(fmt="iso", utc=True)


def _orjson_dumps(event: Any, **_: Any) -> str:
    """structlog's recommended fast serializer. What orjson cannot encode is rendered as the
    standard library's encoder would have (repr of unknown types), never an error: a log line
    must not fail the request that writes it."""
    try:
        return orjson.dumps(event, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # an int beyond 64 bits, say
        return json.dumps(event, default=repr)


def _render(json: bool) -> list[Processor]:
    if json:
        return [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_orjson_dumps),
        ]
    return [structlog.dev.ConsoleRenderer()]  # renders exceptions itself


class _StderrLogger(structlog.WriteLogger):
    """structlog's plain writer, to stderr (where both servers write), with the name that
    `add_logger_name` reads."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(sys.stderr)
        self.name = name or "saas"


def _stderr_logger(*args: Any) -> _StderrLogger:
    return _StderrLogger(args[0] if args and isinstance(args[0], str) else None)


def configure_logging(level: str = "INFO", json: bool = False) -> None:
    """structlog for the app's own lines: written straight to stderr (no standard-library
    handler on the way, so an access line costs little)."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.stdlib.add_logger_name,
            _timestamper(),
            *_render(json),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_level(level)),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=True,
    )


def stdlib_formatter(json: bool = False) -> logging.Formatter:
    """The formatter of `logging_config`: a standard-library record as the app's lines look."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            _timestamper(),
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_render(json)],
    )


def logging_config(level: str = "INFO", json: bool = False) -> dict[str, Any]:
    """A `logging.config.dictConfig` dict for Gunicorn (`logconfig_dict`) and Uvicorn
    (`log_config`): Gunicorn's, Uvicorn's and every library's records on stderr, in the app's
    format; both servers' access logs off. Plain values only, so that it can be printed and
    pickled (Uvicorn hands it to the worker processes it spawns)."""
    name = logging.getLevelName(_level(level))

    def silent() -> dict[str, Any]:
        return {"handlers": [], "level": _SILENT, "propagate": False}

    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"saas": {"()": f"{__name__}.stdlib_formatter", "json": json}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "saas",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": name},
        "loggers": {
            "gunicorn.error": {"handlers": ["stderr"], "level": name, "propagate": False},
            "gunicorn.access": silent(),
            "uvicorn": {"handlers": ["stderr"], "level": name, "propagate": False},
            "uvicorn.error": {"level": name, "propagate": True},
            "uvicorn.access": silent(),
        },
    }
