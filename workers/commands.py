"""The ``commands`` role as a FastStream application: ``faststream run workers.commands:app``."""

from .runner import role_app

app = role_app("commands")
