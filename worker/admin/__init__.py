"""Operator commands: ``icefeed status | files | file | retry | backfill | dlq | preview``.

Each command is an async function returning a JSON-able dict with an ``attention`` list (what
the operator should look at; non-empty means exit status 1). ``cli`` registers the argparse
sub-commands, runs them, and prints the result as text (``render``) or, with ``--json``, as JSON.
SQL lives in ``worker/sql/operator.sql``.
"""
