"""NLP Cloud-compatible spaCy endpoints. Authentication already happened in middleware."""

from typing import Annotated, Any

import orjson
import structlog
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from starlette.responses import Response

from saas import problems
from saas.auth.principal import Principal
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
from saas.nlp.tasks import (
    BATCH_TASKS,
    batch_too_large,
    model_not_in_plan,
    unknown_model,
)
from saas.problems.errors import AppError, Forbidden, NotFound
from saas.web.context import CUSTOMER_PREFIX, Metering, RequestContext
from saas.web.deps import Context, CurrentPrincipal, idempotency_key
from saas.web.openapi import BILLABLE, BODY, CUSTOMER, errors

log = structlog.get_logger(__name__)
router = APIRouter(prefix=CUSTOMER_PREFIX, tags=["nlp"], responses=CUSTOMER)


def batch_route_name(task: str) -> str:
    return f"{task.replace('-', '_')}_batch"


# What each route costs, by route name: read by the metering and admission middleware before
# the route runs. The app refuses to start if a customer route is missing here.
METERING: dict[str, Metering] = {
    "entities": Metering("entities", billable=True),
    "tokens": Metering("tokens", billable=True),
    "dependencies": Metering("dependencies", billable=True),
    "sentence_dependencies": Metering("sentence-dependencies", billable=True),
    "extractions": Metering("extractions", billable=True),
    **{
        batch_route_name(task): Metering(f"{task}/batch", billable=True, per_text=True)
        for task in BATCH_TASKS
    },
    "versions": Metering("versions"),
    "list_models": Metering("models"),
}

# The route's own errors; the router declares the middleware's (saas/web/openapi.py).
_MODEL_ERRORS = errors({403: "Account suspended or model not in the plan", 404: "Unknown model"})
_ERRORS = {
    **BILLABLE,
    **BODY,
    **_MODEL_ERRORS,
    **errors(
        {
            400: "Empty or invalid text, an invalid Content-Length header, or an invalid"
            " Idempotency-Key",
            409: "A request with the same Idempotency-Key is still running; retry after"
            " Retry-After",
            413: "Text longer than the plan allows, or body too large",
            415: "Body is not JSON",
            422: "Malformed JSON or wrong types, or an Idempotency-Key already used with another"
            " request",
        }
    ),
}
_BATCH_ERRORS = {
    **_ERRORS,
    **errors(
        {
            400: "An empty or invalid text (the detail names it, e.g. 'texts[3]'), an invalid"
            " Content-Length header, or an invalid Idempotency-Key",
            402: "Monthly quota exhausted (each text counts)",
            413: "More texts than the plan allows in a batch, a text longer than the plan"
            " allows, or body too large",
            429: "Rate limit exceeded (each text counts), or too many failed keys from this"
            " address; retry after Retry-After",
        }
    ),
}


# The dependencies below are `async def` although they never await: FastAPI runs a plain `def`
# dependency in its thread pool, and four thread hops per request cost ~15% of the event loop's
# time at 32 connections (py-spy).
async def get_engine(request: Request) -> InferencePool:
    engine: InferencePool = request.app.state.nlp
    return engine


async def require_json(request: Request) -> None:
    """415 for a declared non-JSON body (a missing Content-Type is read as JSON)."""
    content_type = request.headers.get("content-type")
    if content_type is None:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise AppError("Content-Type must be application/json.", problems.UNSUPPORTED_MEDIA_TYPE)


def check_model(
    model: str, principal: Principal, engine: InferencePool, context: RequestContext
) -> str:
    if model not in engine.models:
        raise NotFound(unknown_model(model), problems.MODEL_NOT_FOUND)
    if not principal.may_use_model(model):
        raise Forbidden(model_not_in_plan(model), problems.MODEL_NOT_IN_PLAN)
    context.model = model  # for the usage event: only models the service runs
    return model


async def resolve_model(
    model: str,
    principal: CurrentPrincipal,
    engine: Annotated[InferencePool, Depends(get_engine)],
    context: Context,
) -> str:
    """Runs before the body is validated, so an unknown model is 404 whatever the body."""
    return check_model(model, principal, engine, context)


def check_text(
    text: str, principal: Principal, field: str = "text", index: int | None = None
) -> None:
    """`index`: the text's place in a batch's `texts`, which the error names."""
    where: dict[str, Any] = {} if index is None else {"texts_index": index}
    if not text.strip():
        raise AppError(f"'{field}' must not be empty.", problems.EMPTY_TEXT, **where)
    limit = principal.max_text_chars
    if len(text) > limit:
        detail = f"'{field}' has {len(text)} characters; your plan allows {limit}."
        raise AppError(detail, problems.TEXT_TOO_LONG, limit=limit, **where)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        detail = f"'{field}' is not valid Unicode (unpaired surrogate)."
        raise AppError(detail, problems.INVALID_TEXT, **where) from None


ModelName = Annotated[str, Depends(resolve_model)]
NlpEngine = Annotated[InferencePool, Depends(get_engine)]
_JSON_BODY = [Depends(require_json), Depends(idempotency_key)]


async def _annotate(
    context: RequestContext,
    engine: InferencePool,
    principal: Principal,
    model: str,
    task: str,
    text: str,
    options: dict[str, Any] | None = None,
    field: str = "text",
) -> Response:
    context.chars = len(text)
    check_text(text, principal, field)
    try:
        payload = await engine.run(model, task, text, options)
    except InferenceFailed as exc:
        _log_failure(context, model, task, exc)
        raise
    # The inference process already serialized the answer with orjson: send its bytes as they
    # are (no ORJSONResponse, no response_model validation, no second encoding here).
    return Response(payload, media_type="application/json")


@router.post(
    "/{model}/entities", response_model=EntitiesOut, dependencies=_JSON_BODY, responses=_ERRORS
)
async def entities(
    body: EntitiesIn,
    context: Context,
    model: ModelName,
    principal: CurrentPrincipal,
    engine: NlpEngine,
) -> Response:
    """Named entities, with character offsets into the submitted text."""
    options = {"searched_entity": body.searched_entity} if body.searched_entity else None
    return await _annotate(context, engine, principal, model, "entities", body.text, options)


@router.post(
    "/{model}/tokens", response_model=TokensOut, dependencies=_JSON_BODY, responses=_ERRORS
)
async def tokens(
    body: TextIn, context: Context, model: ModelName, principal: CurrentPrincipal, engine: NlpEngine
) -> Response:
    """Tokens with lemmas and character offsets."""
    return await _annotate(context, engine, principal, model, "tokens", body.text)


@router.post(
    "/{model}/dependencies",
    response_model=DependenciesOut,
    dependencies=_JSON_BODY,
    responses=_ERRORS,
)
async def dependencies(
    body: TextIn, context: Context, model: ModelName, principal: CurrentPrincipal, engine: NlpEngine
) -> Response:
    """Words with their tags, and dependency arcs between token indexes."""
    return await _annotate(context, engine, principal, model, "dependencies", body.text)


@router.post(
    "/{model}/sentence-dependencies",
    response_model=SentenceDependenciesOut,
    dependencies=_JSON_BODY,
    responses=_ERRORS,
)
async def sentence_dependencies(
    body: TextIn, context: Context, model: ModelName, principal: CurrentPrincipal, engine: NlpEngine
) -> Response:
    """Dependencies sentence by sentence; indexes are relative to each sentence."""
    return await _annotate(context, engine, principal, model, "sentence-dependencies", body.text)


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
    engine: InferencePool,
    principal: Principal,
    model: str,
    task: str,
    texts: list[str],
    options: dict[str, Any] | None,
) -> Response:
    context.chars = sum(map(len, texts))
    # The admission step already refused larger batches; this covers any other way in.
    if len(texts) > principal.batch_limit:
        detail = batch_too_large(principal, len(texts))
        raise AppError(detail, problems.BATCH_TOO_LARGE, limit=principal.batch_limit)
    for index, text in enumerate(texts):
        check_text(text, principal, f"texts[{index}]", index)
    payloads = await engine.run_many(model, task, texts, options)
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
    # The engine's answers are JSON already: join them instead of parsing and serializing again.
    results = b",".join(_FAILED_ENTRY if isinstance(p, InferenceFailed) else p for p in payloads)
    return Response(b'{"results":[' + results + b"]}", media_type="application/json")


def _batch_route(task: str, answer: type[BaseModel], summary: str) -> dict[str, Any]:
    """The decorator arguments of POST /v1/{model}/{task}/batch."""
    return {
        "path": f"/{{model}}/{task}/batch",
        "name": batch_route_name(task),
        "summary": summary,
        "description": f"`results[i]` is exactly what `POST /v1/{{model}}/{task}` answers for"
        ' `texts[i]`, or `{"error": {"detail": ..., "code": "inference_failed"}}` for a text that'
        " failed inside spaCy (not billed; 500 when every text fails). Each text is billed and"
        " rate limited as one request.",
        "response_model": answer,
        "dependencies": _JSON_BODY,
        "responses": _BATCH_ERRORS,
    }


@router.post(**_batch_route("entities", EntitiesBatchOut, "Entities of several texts"))
async def entities_batch(
    body: EntitiesBatchIn,
    context: Context,
    model: ModelName,
    principal: CurrentPrincipal,
    engine: NlpEngine,
) -> Response:
    options = {"searched_entity": body.searched_entity} if body.searched_entity else None
    return await _annotate_batch(context, engine, principal, model, "entities", body.texts, options)


@router.post(**_batch_route("tokens", TokensBatchOut, "Tokens of several texts"))
async def tokens_batch(
    body: TextsIn,
    context: Context,
    model: ModelName,
    principal: CurrentPrincipal,
    engine: NlpEngine,
) -> Response:
    return await _annotate_batch(context, engine, principal, model, "tokens", body.texts, None)


@router.post(**_batch_route("dependencies", DependenciesBatchOut, "Dependencies of several texts"))
async def dependencies_batch(
    body: TextsIn,
    context: Context,
    model: ModelName,
    principal: CurrentPrincipal,
    engine: NlpEngine,
) -> Response:
    return await _annotate_batch(
        context, engine, principal, model, "dependencies", body.texts, None
    )


@router.post(
    **_batch_route(
        "sentence-dependencies",
        SentenceDependenciesBatchOut,
        "Sentence dependencies of several texts",
    )
)
async def sentence_dependencies_batch(
    body: TextsIn,
    context: Context,
    model: ModelName,
    principal: CurrentPrincipal,
    engine: NlpEngine,
) -> Response:
    return await _annotate_batch(
        context, engine, principal, model, "sentence-dependencies", body.texts, None
    )


@router.get("/{model}/versions", response_model=VersionsOut, responses=_MODEL_ERRORS)
@router.get("/{model}/version", response_model=VersionsOut, include_in_schema=False)
async def versions(model: ModelName, engine: NlpEngine) -> VersionsOut:
    meta = engine.meta[model]
    return VersionsOut(spacy=meta["spacy_version"], model=f"{model} {meta['version']}")


@router.get("/models", response_model=ModelsOut)
async def list_models(principal: CurrentPrincipal, engine: NlpEngine) -> ModelsOut:
    """The models this key's plan may use."""
    return ModelsOut(
        models=[
            ModelInfo(name=name, lang=meta["lang"], version=meta["version"])
            for name, meta in engine.meta.items()
            if principal.may_use_model(name)
        ]
    )


@router.post(
    "/extractions", response_model=ExtractionsOut, dependencies=_JSON_BODY, responses=_ERRORS
)
async def extractions(
    body: ExtractionsIn,
    request: Request,
    context: Context,
    principal: CurrentPrincipal,
    engine: NlpEngine,
) -> Response:
    """The original tutorial's endpoint, on the default model."""
    model = check_model(request.app.state.settings.default_model, principal, engine, context)
    return await _annotate(
        context, engine, principal, model, "extractions", body.sentence, field="sentence"
    )
