"""The ``billing`` role as a FastStream application: ``faststream run workers.billing:app``."""

from .runner import role_app

app = role_app("billing")
