"""What running workers must forget once a change commits.

A service function that changes a key, an account or a plan `announce`s it on its session;
whoever owns the session (the request's session dependency, the CLI) commits and then hands the
announced changes to the workers (saas/kit/invalidation.py), never before the commit: a worker that
reloaded an uncommitted change would cache the old value again. No Redis here: the CLI imports
this on every command.
"""

from dataclasses import dataclass
from typing import Literal

import orjson
from sqlmodel import Session

ChangeKind = Literal["key", "account", "plan", "everything"]
_SESSION_KEY = "saas_announced_changes"


@dataclass(frozen=True, slots=True)
class Change:
    """What workers must forget: a key (by hash), an account or a plan (by id), or all."""

    kind: ChangeKind
    value: str | int = 0

    def encode(self) -> bytes:
        return orjson.dumps({"kind": self.kind, "value": self.value})

    @classmethod
    def decode(cls, data: bytes) -> "Change":
        fields = orjson.loads(data)
        return cls(kind=fields["kind"], value=fields["value"])


EVERYTHING = Change("everything")


def announce(session: Session, change: Change) -> None:
    """Queue `change` to be published once the session's transaction commits."""
    session.info.setdefault(_SESSION_KEY, []).append(change)


def announced(session: Session) -> list[Change]:
    """The queued changes, once (call after the commit)."""
    changes: list[Change] = session.info.pop(_SESSION_KEY, [])
    return list(dict.fromkeys(changes))
