"""Postgres read models: folds of the log, their store, and the queries that serve reads.

The read model modules register their folds with ``ops.folds`` when imported; importing
them here means that any use of the package projects every read model.
"""

from . import (
    activity,
    agents,
    billing_outcomes,
    dead_letters,
    invoices,
    outcomes,
    plans,
    sessions,
    tenants,
    turns,
    usage,
)

__all__ = [
    "activity",
    "agents",
    "billing_outcomes",
    "dead_letters",
    "invoices",
    "outcomes",
    "plans",
    "sessions",
    "tenants",
    "turns",
    "usage",
]
