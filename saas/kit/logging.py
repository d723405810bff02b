"""Logging in one format: JSON lines (SAAS_LOG_JSON=true) or readable ones, on stderr.

The app logs with structlog (`configure_logging`, called by create_app). Gunicorn, Uvicorn and
libraries log with the standard library: `logging_config` is the `logging.config.dictConfig`
dict that renders their records with the same processors (structlog's ProcessorFormatter), so
that every line of a server, whoever wrote it, has the same shape: `event`, `level`, `logger`,
`timestamp`, plus the event's own fields. Gunicorn takes it as `logconfig_dict`, Uvicorn as
`log_config` (saas/cli/serve.py). Neither server's access log is kept: the app writes one line
per request (saas/pipeline/request_context.py), with its route template, status, latency,
request id and account id.

Nothing secret reaches a line, in either format, whoever wrote it:
- tracebacks are the standard library's (`format_exc_info`), without local variables: the
  console renderer's own formatter (Rich) prints every frame's locals, and a request's frames
  hold its key, its cookies and its form;
- `redact_secrets`, the last step before rendering, replaces the values of fields named like
  credentials (headers, cookies, form fields, keyword arguments) and cuts out anything shaped
  like an API key, in the message, every field and the traceback's text.
"""

import json
import logging
import re
import sys
from typing import Any

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from saas.auth.key_format import KEY_PREFIX, redact_keys

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


REDACTED = "[redacted]"
# A field, header, cookie or form field whose name has one of these words (separated by `_` or
# `-`, any case) holds a credential: Authorization, X-API-Key, Cookie, csrf_token, the
# dashboard's saas_session, a webhook secret...
_SECRET_NAME = re.compile(
    r"(?:^|[_-])(?:authorization|cookie|api[_-]?key|token|csrf|session|secret|password|passwd)"
    r"(?:$|[_-])",
    re.IGNORECASE,
)
_KEY_PREFIX_BYTES = KEY_PREFIX.encode()
_MAX_DEPTH = 6  # containers nested deeper than this are replaced, not walked


_name_is_secret: dict[str, bool] = {}  # the field names seen so far: a few dozen


def _is_secret_name(name: str) -> bool:
    secret = _name_is_secret.get(name)
    if secret is None:
        secret = _name_is_secret[name] = _SECRET_NAME.search(name) is not None
        if len(_name_is_secret) > 10_000:  # names are not meant to be data; stay bounded
            _name_is_secret.clear()
    return secret


def _name(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return None


def _redacted(value: Any, depth: int = 0) -> Any:
    """`value` without key-shaped text and with credential-named entries replaced."""
    if isinstance(value, str):
        return redact_keys(value)
    if isinstance(value, bytes | bytearray):
        if _KEY_PREFIX_BYTES not in value:
            return value
        return redact_keys(bytes(value).decode("latin-1")).encode("latin-1")
    if isinstance(value, int | float | None):
        return value
    if depth >= _MAX_DEPTH:
        return "[nested too deep]"  # not walked, so not written either
    if isinstance(value, dict):
        return {
            k: REDACTED if (n := _name(k)) and _is_secret_name(n) else _redacted(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        if len(value) == 2 and (n := _name(value[0])) is not None and _is_secret_name(n):
            return (value[0], REDACTED)  # a (name, value) pair: a header, a cookie, a form field
        items = [_redacted(item, depth + 1) for item in value]
        return items if isinstance(value, list) else tuple(items)
    # Anything else is written as its repr (an exception, say): checked as that text.
    text = repr(value)
    return redact_keys(text) if KEY_PREFIX in text else value


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor, last before rendering (so the traceback is text by then). An access
    line (short strings and numbers) costs a dict lookup and a substring search per field."""
    for name, value in event_dict.items():
        if _name_is_secret.get(name, True) and _is_secret_name(name):
            event_dict[name] = REDACTED
        elif type(value) is str:
            if KEY_PREFIX in value:
                event_dict[name] = redact_keys(value)
        elif not isinstance(value, int | float | None):
            event_dict[name] = _redacted(value)
    return event_dict


def _render(json: bool) -> list[Processor]:
    # Both formats take the traceback as plain text, without locals (see the module's doc).
    steps: list[Processor] = [structlog.processors.format_exc_info, redact_secrets]
    if json:
        return [*steps, structlog.processors.JSONRenderer(serializer=_orjson_dumps)]
    # Its own formatter too, should a traceback ever reach it unformatted: never Rich's (locals).
    return [
        *steps,
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
    ]


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
    quiet = logging.getLevelName(max(logging.WARNING, _level(level)))

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
            # httpx writes every request's URL at INFO: a webhook's URL often carries its own
            # credential (Slack's, Discord's), so only its warnings and errors are kept.
            "httpx": {"level": quiet},
            "httpcore": {"level": quiet},
        },
    }
