"""NLP Cloud-compatible spaCy endpoints, made from one table of tasks. Authentication,
the model policy (saas/nlp/policy.py: model, batch size, texts) and admission already happened
in the pipeline; a handler validates the body's shape and runs spaCy."""

from dataclasses import dataclass
from typing import Annotated, Any

import orjson
import structlog
from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel
from starlette.responses import Response

from saas import problems
from saas.nlp.lane import TEXT_FAILED, InferenceFailed
from saas.nlp.pool import InferencePool
from saas.nlp.schemas import (
    DependenciesBatchOut,
    DependenciesOut,
    EntitiesBatchIn,
    EntitiesBatchOut,
    EntitiesIn,
    EntitiesOut,
    ExtractionsIn,
    ExtractionsOut,
    ModelInfo,
    ModelsOut,
    SentenceDependenciesBatchOut,
    SentenceDependenciesOut,
    TextError,
    TextFailed,
    TextIn,
    TextsIn,
    TokensBatchOut,
    TokensOut,
    VersionsOut,
)
from saas.problems.errors import AppError
from saas.web.context import CUSTOMER_PREFIX, Metering, RequestContext
from saas.web.deps import Context, CurrentPrincipal, idempotency_key
from saas.web.openapi import (
    BILLABLE_PROBLEMS,
    BODY_PROBLEMS,
    CUSTOMER,
    IDEMPOTENCY_PROBLEMS,
    KEYED_PROBLEMS,
    problem_errors,
)
from saas.web.services import CurrentServices

log = structlog.get_logger(__name__)
router = APIRouter(prefix=CUSTOMER_PREFIX, tags=["nlp"], responses=CUSTOMER)


@dataclass(frozen=True, slots=True)
class Task:
    """An NLP Cloud task: POST /v1/{model}/{name} for a text, and .../batch for several."""

    name: str
    body: type[TextIn]
    answer: type[BaseModel]
    batch_body: type[TextsIn]
    batch_answer: type[BaseModel]
    description: str
    batch_summary: str

    @property
    def route_name(self) -> str:
        return self.name.replace("-", "_")

    @property
    def batch_route_name(self) -> str:
        return f"{self.route_name}_batch"


TASK_ROUTES = (
    Task(
        "entities",
        EntitiesIn,
        EntitiesOut,
        EntitiesBatchIn,
        EntitiesBatchOut,
        "Named entities, with character offsets into the submitted text.",
        "Entities of several texts",
    ),
    Task(
        "tokens",
        TextIn,
        TokensOut,
        TextsIn,
        TokensBatchOut,
        "Tokens with lemmas and character offsets.",
        "Tokens of several texts",
    ),
    Task(
        "dependencies",
        TextIn,
        DependenciesOut,
        TextsIn,
        DependenciesBatchOut,
        "Words with their tags, and dependency arcs between token indexes.",
        "Dependencies of several texts",
    ),
    Task(
        "sentence-dependencies",
        TextIn,
        SentenceDependenciesOut,
        TextsIn,
        SentenceDependenciesBatchOut,
        "Dependencies sentence by sentence; indexes are relative to each sentence.",
        "Sentence dependencies of several texts",
    ),
)

# What each route costs and which body field holds its texts, by route name: read by the
# pipeline before the route runs. The app refuses to start if a customer route is missing here.
METERING: dict[str, Metering] = {
    **{
        task.route_name: Metering(task.name, billable=True, text_field="text")
        for task in TASK_ROUTES
    },
    **{
        task.batch_route_name: Metering(
            f"{task.name}/batch", billable=True, per_text=True, text_field="texts"
        )
        for task in TASK_ROUTES
    },
    "extractions": Metering(
        "extractions", billable=True, text_field="sentence", default_model=True
    ),
    "versions": Metering("versions"),
    "list_models": Metering("models"),
}

_MODEL_PROBLEMS = (problems.MODEL_NOT_FOUND, problems.MODEL_NOT_IN_PLAN)
_TEXT_PROBLEMS = (
    *KEYED_PROBLEMS,
    *BILLABLE_PROBLEMS,
    *BODY_PROBLEMS,
    *IDEMPOTENCY_PROBLEMS,
    *_MODEL_PROBLEMS,
    problems.EMPTY_TEXT,
    problems.INVALID_TEXT,
    problems.TEXT_TOO_LONG,
    problems.UNSUPPORTED_MEDIA_TYPE,
    problems.INVALID_JSON,
    problems.VALIDATION_FAILED,
    problems.OVERLOADED,
)
_ERRORS = problem_errors(*_TEXT_PROBLEMS)
_BATCH_ERRORS = problem_errors(*_TEXT_PROBLEMS, problems.BATCH_TOO_LARGE)


# The dependencies below are `async def` although they never await: FastAPI runs a plain `def`
# dependency in its thread pool, and four thread hops per request cost ~15% of the event loop's
# time at 32 connections (py-spy).
async def get_inference(services: CurrentServices) -> InferencePool:
    return services.inference


async def require_json(request: Request) -> None:
    """415 for a declared non-JSON body (a missing Content-Type is read as JSON)."""
    content_type = request.headers.get("content-type")
    if content_type is None:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise AppError("Content-Type must be application/json.", problems.UNSUPPORTED_MEDIA_TYPE)


async def allowed_model(
    model: Annotated[str, Path(description="A model this deployment runs (GET /v1/models)")],
    context: Context,
) -> str:
    """The URL's model, as the model policy allowed it before admission."""
    assert context.model == model, "the model policy judged this request"
    return model


async def default_model(context: Context) -> str:
    assert context.model is not None, "the model policy judged this request"
    return context.model


ModelName = Annotated[str, Depends(allowed_model)]
Inference = Annotated[InferencePool, Depends(get_inference)]
_JSON_BODY = [Depends(require_json), Depends(idempotency_key)]


def _options(body: BaseModel) -> dict[str, Any] | None:
    searched = getattr(body, "searched_entity", None)
    return {"searched_entity": searched} if searched else None


async def _annotate(
    context: RequestContext,
    inference: InferencePool,
    model: str,
    task: str,
    text: str,
    options: dict[str, Any] | None = None,
) -> Response:
    context.chars = len(text)
    try:
        payload = await inference.run(model, task, text, options)
    except InferenceFailed as exc:
        _log_failure(context, model, task, exc)
        raise
    # The inference process already serialized the answer with orjson: send its bytes as they
    # are (no ORJSONResponse, no response_model validation, no second encoding here).
    return Response(payload, media_type="application/json")


def _log_failure(
    context: RequestContext,
    model: str,
    task: str,
    failure: InferenceFailed,
    index: int | None = None,
) -> None:
    log.error(
        "inference_failed",
        request_id=context.request_id,
        model=model,
        task=task,
        index=index,
        error=failure.error,
    )


# A batch's entry for a text that failed inside spaCy.
_FAILED = TextError(detail=TEXT_FAILED, code=problems.INFERENCE_FAILED.code)
_FAILED_ENTRY = orjson.dumps(TextFailed(error=_FAILED).model_dump())


async def _annotate_batch(
    context: RequestContext,
    inference: InferencePool,
    model: str,
    task: str,
    texts: list[str],
    options: dict[str, Any] | None,
) -> Response:
    context.chars = sum(map(len, texts))
    payloads = await inference.run_many(model, task, texts, options)
    failures = {i: p for i, p in enumerate(payloads) if isinstance(p, InferenceFailed)}
    for index, failure in failures.items():
        _log_failure(context, model, task, failure, index)
    failed = len(failures)
    if failed == len(payloads):
        # Nothing to answer but errors: as the single endpoint does, so that a client retries.
        raise AppError("No text of the batch could be processed.", problems.INFERENCE_FAILED)
    # A text that failed inside spaCy gets an error entry at its index and is not billed.
    context.failed_units = failed
    context.chars = sum(len(t) for i, t in enumerate(texts) if i not in failures)
    # The pool's answers are JSON already: join them instead of parsing and serializing again.
    results = b",".join(_FAILED_ENTRY if isinstance(p, InferenceFailed) else p for p in payloads)
    return Response(b'{"results":[' + results + b"]}", media_type="application/json")


def _add_task_routes(task: Task) -> None:
    """POST /v1/{model}/{task} and its batch form, from the task's row. The handlers' `body`
    parameter gets the task's own model through __annotations__, where FastAPI reads it."""

    async def single(
        body: TextIn, context: Context, model: ModelName, inference: Inference
    ) -> Response:
        return await _annotate(context, inference, model, task.name, body.text, _options(body))

    async def batch(
        body: TextsIn, context: Context, model: ModelName, inference: Inference
    ) -> Response:
        return await _annotate_batch(
            context, inference, model, task.name, body.texts, _options(body)
        )

    single.__annotations__["body"] = task.body
    batch.__annotations__["body"] = task.batch_body
    router.post(
        f"/{{model}}/{task.name}",
        name=task.route_name,
        summary=task.route_name.replace("_", " ").title(),
        description=task.description,
        response_model=task.answer,
        dependencies=_JSON_BODY,
        responses=_ERRORS,
    )(single)
    router.post(
        f"/{{model}}/{task.name}/batch",
        name=task.batch_route_name,
        summary=task.batch_summary,
        description=f"`results[i]` is exactly what `POST /v1/{{model}}/{task.name}` answers for"
        ' `texts[i]`, or `{"error": {"detail": ..., "code": "inference_failed"}}` for a text that'
        " failed inside spaCy (not billed; 500 when every text fails). Each text is billed and"
        " rate limited as one request.",
        response_model=task.batch_answer,
        dependencies=_JSON_BODY,
        responses=_BATCH_ERRORS,
    )(batch)


for _task in TASK_ROUTES:
    _add_task_routes(_task)


@router.get(
    "/{model}/versions",
    response_model=VersionsOut,
    responses=problem_errors(
        *KEYED_PROBLEMS, problems.RATE_LIMITED, problems.LIMITER_UNAVAILABLE, *_MODEL_PROBLEMS
    ),
)
@router.get("/{model}/version", response_model=VersionsOut, include_in_schema=False)
async def versions(model: ModelName, inference: Inference) -> VersionsOut:
    meta = inference.meta[model]
    return VersionsOut(spacy=meta["spacy_version"], model=f"{model} {meta['version']}")


@router.get("/models", response_model=ModelsOut)
async def list_models(principal: CurrentPrincipal, inference: Inference) -> ModelsOut:
    """The models this key's plan may use."""
    return ModelsOut(
        models=[
            ModelInfo(name=name, lang=meta["lang"], version=meta["version"])
            for name, meta in inference.meta.items()
            if principal.may_use_model(name)
        ]
    )


@router.post(
    "/extractions", response_model=ExtractionsOut, dependencies=_JSON_BODY, responses=_ERRORS
)
async def extractions(
    body: ExtractionsIn,
    context: Context,
    model: Annotated[str, Depends(default_model)],
    inference: Inference,
) -> Response:
    """The original tutorial's endpoint, on the default model."""
    return await _annotate(context, inference, model, "extractions", body.sentence)
