"""The serving frameworks users would pick instead of this service, each answering `POST
/v1/{model}/entities`'s JSON from the same model and components (bench.throughput --peers)."""
