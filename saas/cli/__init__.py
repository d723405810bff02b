"""`saas`: serve, migrate, maintain, and manage plans, accounts, keys, usage and the audit log.
Scriptable: every listing takes --json, and commands that create a key print it as their last
line.

One module per domain; each command translates its options to the domain's service function and
its result to a public schema (saas/cli/output.py prints it), nothing else."""

import typer

from saas.cli import accounts, audit, keys, maintain, plans, serve, usage

# No pretty tracebacks: they print local variables, and a local may be a plaintext key.
app = typer.Typer(
    help="spaCy API operations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
serve.register(app)
app.add_typer(plans.app, name="plans")
app.add_typer(accounts.app, name="accounts")
app.add_typer(keys.app, name="keys")
usage.register(app)
audit.register(app)
maintain.register(app)
