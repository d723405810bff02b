"""Which database and which Redis a test runs on, when not on every pair (the `backend`
fixture's parameters are "postgres" and "sqlite", tests/conftest.py)."""

import pytest

# For tests whose subject does not touch storage (spaCy's answers, input validation): they run
# once, on the embedded default, instead of once per database.
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

# For tests of what only the production pair has: Redis (SQLite runs without it), PostgreSQL's
# own behaviour, servers sharing one database.
POSTGRES_ONLY = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

# Tests that run on one Redis for both databases and on the Redis Cluster with PostgreSQL (the
# production pair; the cluster is not what differs between the databases).
ON_REDIS_AND_CLUSTER = pytest.mark.parametrize(
    ("backend", "redis_kind"),
    [("postgres", "single"), ("sqlite", "single"), ("postgres", "cluster")],
    indirect=["backend"],
)
