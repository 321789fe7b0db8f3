"""The roles: decisions, the processes that run them, and the effect workers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def lazy_role_app(role: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` giving ``app``, the role as a FastStream application
    (``faststream run workers.<role>:app``), built on first use from the environment's
    settings: for a role's module that ``workers.runner`` itself imports."""

    def attribute(name: str) -> Any:
        if name == "app":
            from .runner import role_app

            return role_app(role)
        raise AttributeError(name)

    return attribute
