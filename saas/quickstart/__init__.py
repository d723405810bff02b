"""The quickstarts: one snippet per client (the files in snippets/), shown in the OpenAPI
description (/docs, /redoc) and in the README's Quickstart section, both built here from the same
files so that they cannot differ. tests/e2e/test_clients.py runs the README's copy of each
against a server; `python -m saas.quickstart README.md` rewrites that copy after a change here.
Imports nothing of the project: the app reads it, and so does the command."""

import textwrap
from dataclasses import dataclass
from importlib.resources import files


@dataclass(frozen=True)
class Snippet:
    name: str  # the README's marker before the code: <!-- snippet: NAME -->
    title: str
    language: str  # the code fence's
    file: str  # in snippets/
    note: str = ""  # said before the code

    @property
    def source(self) -> str:
        return files(__name__).joinpath("snippets", self.file).read_text(encoding="utf-8")


SNIPPETS = (
    Snippet("curl", "curl", "sh", "curl.sh"),
    Snippet("python-httpx", "Python with httpx", "python", "python-httpx.py"),
    Snippet(
        "python-nlpcloud",
        "Python with NLP Cloud's client",
        "python",
        "python-nlpcloud.py",
        note="Code written for NLP Cloud works unchanged: the official `nlpcloud` package "
        "(`pip install nlpcloud`) reads its server's address from `nlpcloud.BASE_URL` when a "
        "client is made, so one line before that points it here.",
    ),
    Snippet(
        "javascript-fetch",
        "JavaScript with fetch",
        "js",
        "javascript-fetch.mjs",
        note="Node 18 or newer, as an ES module (save it as `quickstart.mjs`, run `node "
        "quickstart.mjs`).",
    ),
)

INTRO = (
    "The snippets call `http://127.0.0.1:8000`, where `make run` serves, with the demo key "
    "that its first run prints (`demo key (shown once, store it now): sk_live_...`): put it "
    "in place of `<demo key>`, or set `SPACY_API_KEY` to a key and `SPACY_API_URL` to another "
    "server (behind `make stack`'s proxy, `http://127.0.0.1:8080/api`). Each one asks for the "
    "entities of a text, then of a batch of two texts, and prints the rate-limit headers of the "
    "last answer."
)

# The API's description (/docs) speaks to customers, who have a server's address and their key.
API_INTRO = (
    "Each snippet reads this server's address from `SPACY_API_URL` and your API key from "
    "`SPACY_API_KEY` (their defaults, `http://127.0.0.1:8000` and `<demo key>`, are a local "
    "development server's). Each one asks for the entities of a text, then of a batch of two "
    "texts, and prints the rate-limit headers of the last answer."
)

# Where the README's generated part starts and ends.
BEGIN = (
    "<!-- quickstart: generated from saas/quickstart/ by `python -m saas.quickstart README.md`;"
    " edit there -->"
)
END = "<!-- quickstart: end -->"


def _paragraph(text: str) -> str:
    return textwrap.fill(text, width=100, break_long_words=False, break_on_hyphens=False)


def markdown(*, markers: bool, intro: str = INTRO) -> str:
    """The intro and a section per snippet (### headings). With `markers`, each code block is
    preceded by the comment naming its snippet, which the README's tests look for."""
    parts = [_paragraph(intro)]
    for snippet in SNIPPETS:
        parts.append(f"### {snippet.title}")
        if snippet.note:
            parts.append(_paragraph(snippet.note))
        code = f"```{snippet.language}\n{snippet.source.rstrip()}\n```"
        parts.append(f"<!-- snippet: {snippet.name} -->\n{code}" if markers else code)
    return "\n\n".join(parts)


def description(summary: str) -> str:
    """The OpenAPI description: `summary`, then the quickstarts."""
    return f"{summary}\n\n## Quickstart\n\n{markdown(markers=False, intro=API_INTRO)}"


def readme_part() -> str:
    """What the README holds between BEGIN and END, the markers included."""
    return f"{BEGIN}\n{markdown(markers=True)}\n{END}"


def with_readme_part(readme: str) -> str:
    """`readme` with its generated part replaced by the current one."""
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    return readme[:start] + readme_part() + readme[end:]
