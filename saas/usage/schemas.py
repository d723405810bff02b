"""What usage and invoice answers carry (the admin API's and GET /v1/usage's documented shapes)."""

from pydantic import BaseModel, ConfigDict, Field


class UsageTotals(BaseModel):
    requests: int = Field(description="Every metered request, answered or refused.")
    billable_requests: int = Field(description="Units billed: 2xx NLP answers, one per text.")
    characters: int


class EndpointUsage(UsageTotals):
    endpoint: str


class DayUsage(UsageTotals):
    day: str


class WindowLimit(BaseModel):
    name: str
    limit: int
    seconds: int


class PlanLimits(BaseModel):
    name: str
    rate_limit: str
    windows: list[WindowLimit]
    monthly_quota: int | None
    max_text_chars: int
    max_batch_texts: int
    models: list[str] | None


class MonthUsage(UsageTotals):
    account: str
    month: str
    by_endpoint: list[EndpointUsage]
    by_day: list[DayUsage]
    plan: PlanLimits
    remaining_quota: int | None


class UsageRow(BaseModel):
    bucket: str = Field(description="The day, or the hour (UTC), the row counts.")
    account_id: int
    endpoint: str
    status: int
    requests: int
    billable_requests: int
    characters: int


class UsageSeries(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    granularity: str
    rows: list[UsageRow]


class InvoiceLine(BaseModel):
    month: str
    account_id: int
    account: str
    plan: str
    billable_requests: int
    base_fee_cents: int
    metered_cents: int
    total_cents: int


class Invoices(BaseModel):
    month: str
    invoices: list[InvoiceLine]
