"""One API version (saas/kit/version.py), semantic, shown by the OpenAPI document and carried by the
latest release of CHANGELOG.md, which keeps the Keep a Changelog layout."""

import re
import tomllib
from datetime import date
from pathlib import Path

from saas.app import create_app
from saas.config import Settings
from saas.kit.version import VERSION

ROOT = Path(__file__).parents[1]
SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")
RELEASE = re.compile(r"## \[(?P<version>[^\]]+)\] - (?P<date>\d{4}-\d{2}-\d{2})")


def headings() -> list[str]:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.startswith("## ")]


def test_version_is_semantic_and_the_latest_release() -> None:
    assert SEMVER.fullmatch(VERSION)
    sections = headings()
    assert sections[0] == "## [Unreleased]"
    releases: list[tuple[tuple[int, ...], date]] = []
    for line in sections[1:]:
        release = RELEASE.fullmatch(line)
        assert release, f"not a release heading: {line}"
        number = SEMVER.fullmatch(release["version"])
        assert number, f"not a semantic version: {line}"
        releases.append((tuple(map(int, number.groups())), date.fromisoformat(release["date"])))
    versions, dates = [r[0] for r in releases], [r[1] for r in releases]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions)
    assert dates == sorted(dates, reverse=True)
    assert ".".join(map(str, versions[0])) == VERSION, (
        "CHANGELOG.md's latest release is not saas/kit/version.py's VERSION"
    )


def test_openapi_and_package_carry_the_version(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'saas.kit.db'}", _env_file=None)
    assert create_app(settings).openapi()["info"]["version"] == VERSION
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "saas.kit.version.VERSION"
    }
