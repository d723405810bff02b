"""mosec peer: `python -m bench.peers.mosec_app --port PORT`. POST /inference {"text": ...}.

mosec's Rust front end queues requests and hands batches (max_batch_size, max_wait_time in ms)
to one Python worker process; JSON in and out is mosec's default (de)serialization."""

from typing import Any

from mosec import Server, Worker

from bench.peers.common import MAX_BATCH, Entities


class EntitiesWorker(Worker):
    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.model = Entities()

    def forward(self, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.model([str(item["text"]) for item in data])


def main() -> None:
    server = Server()  # type: ignore[no-untyped-call]
    # timeout is per batch, in seconds: a full batch of long texts at c=128 must not be cut off.
    server.append_worker(
        EntitiesWorker, num=1, max_batch_size=MAX_BATCH, max_wait_time=10, timeout=30
    )
    server.run()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
