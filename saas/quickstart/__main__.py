"""`python -m saas.quickstart README.md`: rewrite the README's Quickstart part from the snippets."""

import sys
from pathlib import Path

from saas.quickstart import with_readme_part


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m saas.quickstart README.md", file=sys.stderr)
        return 2
    path = Path(argv[0])
    path.write_text(with_readme_part(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
