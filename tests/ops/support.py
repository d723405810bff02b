"""What the ops/ checks share: where the files are, the settings of ops/.env.example, the memory
plan of ops/sizing.toml, and the Dockerfile read as instructions."""

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OPS = REPO / "ops"
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = OPS / ".env.example"

_ASSIGNMENT = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


def env_example_lines() -> list[str]:
    return ENV_EXAMPLE.read_text().splitlines()


def env_example() -> dict[str, str]:
    """ops/.env.example as Docker Compose reads it: NAME=value lines, # comments, no quoting."""
    values: dict[str, str] = {}
    for number, line in enumerate(env_example_lines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _ASSIGNMENT.match(line)
        assert match, f"ops/.env.example:{number}: not NAME=value: {line!r}"
        values[match[1]] = match[2]
    return values


@dataclass(frozen=True)
class MemoryPlan:
    first_worker: int
    extra_worker: int
    headroom: int

    def planned(self, workers: int) -> int:
        return self.first_worker + self.extra_worker * (workers - 1)

    def limit(self, workers: int) -> int:
        return self.planned(workers) + self.headroom


def memory_plan() -> MemoryPlan:
    with (OPS / "sizing.toml").open("rb") as file:
        return MemoryPlan(**tomllib.load(file)["memory_mib"])


def mebibytes(quantity: str, units: dict[str, int]) -> int:
    """A memory quantity in MiB, with the unit suffixes (to bytes) the caller's tool accepts."""
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity)
    assert match and match[2] in units, f"unexpected memory quantity {quantity!r}"
    size = int(match[1]) * units[match[2]]
    assert size % 2**20 == 0, f"{quantity!r} is not a whole number of MiB"
    return size // 2**20


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str  # upper case: FROM, RUN, COPY...
    arguments: str


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Instructions with their continuation lines joined; comments and blank lines dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        keyword, _, arguments = " ".join(part for part in pending if part).partition(" ")
        instructions.append(Instruction(start, keyword.upper(), arguments.strip()))
        pending = []
    return instructions


def exec_form(arguments: str) -> list[str] | None:
    """The JSON array of an exec-form CMD/ENTRYPOINT/HEALTHCHECK CMD, or None (shell form)."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) else None


def dockerfile_user() -> tuple[int, int]:
    """The uid and gid the image runs as (its last USER, which must be numeric)."""
    users = [i for i in dockerfile_instructions(DOCKERFILE.read_text()) if i.keyword == "USER"]
    assert users, "the Dockerfile sets no USER: the image would run as root"
    match = re.fullmatch(r"(\d+):(\d+)", users[-1].arguments)
    assert match, f"USER {users[-1].arguments!r}: want numeric uid:gid (runAsNonRoot checks it)"
    return int(match[1]), int(match[2])
