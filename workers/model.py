"""The ``model`` role as a FastStream application: ``faststream run workers.model:app``."""

from .runner import role_app

app = role_app("model")
