"""Request and response shapes of NLP Cloud's spaCy API (for validation and the OpenAPI docs)."""

from typing import Annotated

from pydantic import BaseModel, Field

from saas.kit.fields import NOT_BLANK

# Blank text is refused with 400 (saas/nlp/routes.py), not 422: the pattern only documents it.
Text = Annotated[str, Field(json_schema_extra={"pattern": NOT_BLANK})]


class TextIn(BaseModel):
    text: Text = Field(
        description="The text to analyse.",
        examples=["John Doe is a Go developer at Google in London."],
    )


class EntitiesIn(TextIn):
    searched_entity: str | None = Field(
        default=None,
        description="Return only entities whose type or text equals this (case-insensitive).",
    )


class TextsIn(BaseModel):
    texts: list[Text] = Field(
        min_length=1,
        description="The texts to analyse, each as the single endpoint's `text`. At most the"
        " plan's max_batch_texts, and no more than its smallest rate-limit window; each text is"
        " billed and rate limited as one request.",
        examples=[["John Doe is a Go developer at Google in London.", "Paris is in France."]],
    )


class EntitiesBatchIn(TextsIn):
    searched_entity: str | None = Field(
        default=None,
        description="Applied to every text: return only entities whose type or text equals this"
        " (case-insensitive).",
    )


class ExtractionsIn(BaseModel):
    sentence: Text = Field(examples=["John Doe is a Go developer at Google in London."])


class Entity(BaseModel):
    start: int = Field(description="Character offset of the first character.")
    end: int = Field(description="Character offset after the last character.")
    type: str
    text: str


class EntitiesOut(BaseModel):
    entities: list[Entity]


class Token(BaseModel):
    text: str
    lemma: str
    start: int
    end: int
    index: int = Field(description="Position of the token in the text, from 0 (as in arcs).")
    ws_after: bool


class TokensOut(BaseModel):
    tokens: list[Token]


class Word(BaseModel):
    text: str
    tag: str


class Arc(BaseModel):
    start: int
    end: int
    label: str
    text: str = Field(description="Text of the dependent token.")
    dir: str = Field(description='"left" or "right".')


class DependenciesOut(BaseModel):
    words: list[Word]
    arcs: list[Arc]


class SentenceDependency(BaseModel):
    sentence: str
    dependencies: DependenciesOut


class SentenceDependenciesOut(BaseModel):
    sentence_dependencies: list[SentenceDependency]


class Extraction(BaseModel):
    first_index: int
    last_index: int
    name: str
    content: str


class ExtractionsOut(BaseModel):
    extractions: list[Extraction]


class VersionsOut(BaseModel):
    spacy: str
    model: str


class ModelInfo(BaseModel):
    name: str
    lang: str
    version: str


class ModelsOut(BaseModel):
    models: list[ModelInfo]


class TextError(BaseModel):
    detail: str
    code: str  # saas/problems/__init__.py: always "inference_failed"


class TextFailed(BaseModel):
    """A batch's entry for a text that failed inside spaCy: not billed."""

    error: TextError


# Batch answers: `results[i]` is exactly the single endpoint's answer for `texts[i]`, or a
# TextFailed entry.
class EntitiesBatchOut(BaseModel):
    results: list[EntitiesOut | TextFailed]


class TokensBatchOut(BaseModel):
    results: list[TokensOut | TextFailed]


class DependenciesBatchOut(BaseModel):
    results: list[DependenciesOut | TextFailed]


class SentenceDependenciesBatchOut(BaseModel):
    results: list[SentenceDependenciesOut | TextFailed]
