"""docs/architecture.md stays true to the tree: every path it names exists, and every package of
saas/ is on its map."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
NAMED = re.compile(r"`((?:saas|alembic|tests|docs|bench)/[\w./<>-]*)`")


def test_every_path_it_names_exists() -> None:
    named = {path for path in NAMED.findall(DOC) if "<" not in path}
    assert len(named) > 30
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, missing


def test_every_package_of_saas_is_on_the_map() -> None:
    packages = {f"saas/{path.parent.name}/" for path in (ROOT / "saas").glob("*/__init__.py")}
    unmapped = sorted(package for package in packages if f"`{package}`" not in DOC)
    assert not unmapped, unmapped


def test_the_readme_points_to_it_and_nowhere_outside() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/architecture.md" in readme
    assert "shared folder" not in readme
