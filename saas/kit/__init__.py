"""Shared platform code, below every domain and importing none: the database and Redis
clients, logging, metrics, change announcements and their invalidation, static assets,
migrations, the version, CSV export and the field types tables and schemas share."""
