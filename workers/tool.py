"""The ``tool`` role as a FastStream application: ``faststream run workers.tool:app``."""

from .runner import role_app

app = role_app("tool")
