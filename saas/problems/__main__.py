"""`python -m saas.problems`: the README's table of error codes, to paste."""

from saas.problems import markdown_table

print(markdown_table())
