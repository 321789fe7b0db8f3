"""The ``projector`` role as a FastStream application: ``faststream run workers.projector:app``."""

from .runner import role_app

app = role_app("projector")
