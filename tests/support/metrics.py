"""Reading the server's /metrics as a test would chart them."""

import httpx
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families


def metric(client: TestClient | httpx.Client, name: str, **labels: str) -> float:
    """The sum of the samples named `name` on the server's /metrics whose labels include
    `labels` (0 when there is none), e.g. metric(c, "saas_http_requests_total", status="200")."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )
