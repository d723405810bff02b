"""What the tests share besides fixtures (those are in tests/conftest.py), a module a job:

- servers: PostgreSQL, Redis and Redis Cluster servers of the run's or a test's own, and the
  process helpers for servers the tests start (free_port, start_process, stop_process).
- stores: the run's PostgreSQL and Redis (their URLs, a schema's URL, this run's key prefix).
- apps: the app under test, in this process (dedicated_client) or as servers (the `saas`
  command, wait_until_ready, two_workers_on_redis).
- nlp: the models the tests ask for (MODEL, FRENCH, ENGLISH_ONLY) and the texts they send.
- customers: a plan, account and key made directly in the database (new_customer).
- marks: the databases and Redis kinds a test runs on (SQLITE_ONLY, POSTGRES_ONLY, ...).
- dashboard: a browser signed in to the dashboard, and the CSRF token of its forms.
- problems: assert_problem, the shape every error answer has.
- metrics: metric, one sample sum from /metrics.
- usage: what the ledger holds for an account.
- polling: eventually, the one way to wait for a condition instead of sleeping."""
