"""The quickstarts (saas/quickstart/) are the same in the README and in the OpenAPI description
that /docs and /redoc show. tests/e2e/test_clients.py runs the README's copy of each."""

from pathlib import Path

from saas import quickstart
from saas.app import create_app
from saas.config import Settings

README = Path(__file__).parents[1] / "README.md"


def test_readme_holds_the_generated_quickstarts() -> None:
    readme = README.read_text(encoding="utf-8")
    assert readme.count(quickstart.BEGIN) == 1 and readme.count(quickstart.END) == 1
    assert quickstart.with_readme_part(readme) == readme, (
        "README.md's Quickstart differs from saas/quickstart/: python -m saas.quickstart README.md"
    )


def test_openapi_description_shows_every_snippet(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'saas.kit.db'}", _env_file=None)
    description = create_app(settings).openapi()["info"]["description"]
    assert description.startswith("Named entities, tokens and dependency parses from spaCy")
    for snippet in quickstart.SNIPPETS:
        code = f"```{snippet.language}\n{snippet.source.rstrip()}\n```"
        assert code in description, snippet.name
        assert f"### {snippet.title}" in description
    assert "<!--" not in description  # the README's markers stay in the README


def test_snippets_take_the_server_and_key_from_the_environment() -> None:
    """Shown with `make run`'s address and the demo key's placeholder; run with others."""
    for snippet in quickstart.SNIPPETS:
        for text in ("SPACY_API_URL", "http://127.0.0.1:8000", "SPACY_API_KEY", "<demo key>"):
            assert text in snippet.source, (snippet.name, text)
