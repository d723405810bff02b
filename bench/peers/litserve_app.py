"""LitServe peer: `python -m bench.peers.litserve_app PORT`. POST /predict {"text": ...}.

Dynamic batching (max_batch_size, batch_timeout), one inference worker on the CPU (the machine
has 2 cores; the API server process takes the other), LitServe's own Uvicorn front end."""

import sys
from typing import Any

import litserve as ls  # type: ignore[import-untyped]

from bench.peers.common import MAX_BATCH, Entities


class EntitiesAPI(ls.LitAPI):  # type: ignore[misc]
    def setup(self, device: str) -> None:
        self.model = Entities()

    def decode_request(self, request: dict[str, Any]) -> str:
        return str(request["text"])

    def batch(self, inputs: list[str]) -> list[str]:
        return inputs

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        return self.model(texts)

    def unbatch(self, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return output

    def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        return output


def main() -> None:
    api = EntitiesAPI(max_batch_size=MAX_BATCH, batch_timeout=0.01)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=30)
    server.run(
        host="127.0.0.1", port=int(sys.argv[1]), generate_client_file=False, log_level="warning"
    )


if __name__ == "__main__":
    main()
