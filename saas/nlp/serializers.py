"""spaCy Doc -> NLP Cloud's JSON shapes. Runs in the inference process, next to the Doc."""

from typing import Any

from spacy.tokens import Doc, Span


def entities(doc: Doc, searched_entity: str | None = None) -> dict[str, Any]:
    ents = doc.ents
    if searched_entity:
        wanted = searched_entity.casefold()
        ents = [e for e in ents if wanted in (e.label_.casefold(), e.text.casefold())]
    return {
        "entities": [
            {"start": e.start_char, "end": e.end_char, "type": e.label_, "text": e.text}
            for e in ents
        ]
    }


def tokens(doc: Doc) -> dict[str, Any]:
    return {
        "tokens": [
            {
                "text": t.text,
                "lemma": t.lemma_,
                "start": t.idx,
                "end": t.idx + len(t.text),
                "index": t.i,
                "ws_after": bool(t.whitespace_),
            }
            for t in doc
        ]
    }


def dependencies(span: Doc | Span) -> dict[str, Any]:
    """Words and arcs as displaCy draws them; indexes are relative to `span`."""
    offset = span.start if isinstance(span, Span) else 0
    arcs = []
    for token in span:
        if token.head.i == token.i:  # the root has no arc
            continue
        child, head = token.i - offset, token.head.i - offset
        if child < head:
            arcs.append(
                {
                    "start": child,
                    "end": head,
                    "label": token.dep_,
                    "text": token.text,
                    "dir": "left",
                }
            )
        else:
            arcs.append(
                {
                    "start": head,
                    "end": child,
                    "label": token.dep_,
                    "text": token.text,
                    "dir": "right",
                }
            )
    return {"words": [{"text": t.text, "tag": t.tag_} for t in span], "arcs": arcs}


def sentence_dependencies(doc: Doc) -> dict[str, Any]:
    return {
        "sentence_dependencies": [
            {"sentence": sent.text, "dependencies": dependencies(sent)} for sent in doc.sents
        ]
    }


def extractions(doc: Doc) -> dict[str, Any]:
    """The original tutorial's shape (`POST /v1/extractions`)."""
    return {
        "extractions": [
            {
                "first_index": e.start_char,
                "last_index": e.end_char,
                "name": e.label_,
                "content": e.text,
            }
            for e in doc.ents
        ]
    }
