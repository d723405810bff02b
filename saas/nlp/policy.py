"""What a customer may ask of spaCy, decided once per request, before admission: the model (one
the service runs, else 404; one the plan includes, else 403), the size of a batch (413) and each
text (empty or not Unicode 400, longer than the plan allows 413). The admission step asks before
any counter moves; the route then runs what was judged (RequestContext.model) and validates only
the body's shape (a body this cannot read is left to the route's 422)."""

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import orjson

from saas import problems
from saas.auth.principal import Principal
from saas.problems import ProblemType
from saas.web.context import Metering


@dataclass(frozen=True, slots=True)
class PolicyRefusal:
    problem: ProblemType
    detail: str
    fields: dict[str, Any] = field(default_factory=dict)
    model: str | None = None  # the model it names, when the service runs it (usage counts it)


def unknown_model(model: str) -> str:
    return f"Model '{model}' not found. GET /v1/models lists the available models."


def model_not_in_plan(model: str) -> str:
    return f"Your plan does not include the model '{model}'."


def batch_too_large(principal: Principal, count: int) -> str:
    limit = principal.batch_limit
    if limit < principal.max_batch_texts:
        why = (
            f"each text counts as one request, and the smallest window of your rate limit"
            f" ({principal.rate_limit}) holds {limit}"
        )
    else:
        why = "your plan's max_batch_texts"
    return f"This batch has {count} texts; at most {limit} are allowed ({why})."


def text_refusal(
    text: str, principal: Principal, name: str, index: int | None
) -> PolicyRefusal | None:
    """`name`: the field as the message names it (`text`, `texts[3]`); `index`: the text's place
    in a batch, which the error carries."""
    where: dict[str, Any] = {} if index is None else {"texts_index": index}
    if not text.strip():
        return PolicyRefusal(problems.EMPTY_TEXT, f"'{name}' must not be empty.", where)
    limit = principal.max_text_chars
    if len(text) > limit:
        detail = f"'{name}' has {len(text)} characters; your plan allows {limit}."
        return PolicyRefusal(problems.TEXT_TOO_LONG, detail, {"limit": limit, **where})
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        detail = f"'{name}' is not valid Unicode (unpaired surrogate)."
        return PolicyRefusal(problems.INVALID_TEXT, detail, where)
    return None


def parse(body: bytes) -> Any:
    """The JSON body, or None. The route parses with the standard library, which also takes what
    orjson refuses (NaN, lone surrogates, UTF-16): so does this, or a batch would be charged 1."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            return None


class Policy:
    def __init__(self, models: Collection[str], default_model: str) -> None:
        self.models = frozenset(models)
        self.default_model = default_model

    def model(
        self, metering: Metering, named_model: str | None, principal: Principal
    ) -> str | None | PolicyRefusal:
        """The model the request runs (None for a route without one), or why not.
        `named_model`: what the URL names, as typed."""
        model = self.default_model if metering.default_model else named_model
        if model is None:
            return None
        if model not in self.models:
            return PolicyRefusal(problems.MODEL_NOT_FOUND, unknown_model(model))
        if not principal.may_use_model(model):
            return PolicyRefusal(problems.MODEL_NOT_IN_PLAN, model_not_in_plan(model), model=model)
        return model

    def cost(self, metering: Metering, principal: Principal, body: bytes) -> int | PolicyRefusal:
        """The units a request for an allowed model costs (a batch's texts, else 1), or why its
        texts are refused. A body without the text the route expects costs 1: the route's
        validation answers 422."""
        texts = self._texts(metering, parse(body))
        if texts is None:
            return 1
        if metering.per_text and len(texts) > principal.batch_limit:
            detail = batch_too_large(principal, len(texts))
            return PolicyRefusal(problems.BATCH_TOO_LARGE, detail, {"limit": principal.batch_limit})
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                continue  # the route's 422
            if metering.per_text:
                refused = text_refusal(text, principal, f"texts[{index}]", index)
            else:
                refused = text_refusal(text, principal, str(metering.text_field), None)
            if refused is not None:
                return refused
        return max(1, len(texts))  # an empty list is still a request (the route's 422)

    @staticmethod
    def _texts(metering: Metering, data: Any) -> list[Any] | None:
        value = data.get(metering.text_field) if isinstance(data, dict) else None
        if metering.per_text:
            return value if isinstance(value, list) else None
        return [value] if isinstance(value, str) else None
