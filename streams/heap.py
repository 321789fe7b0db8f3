"""The heap of a long-running agentlog process.

What a process makes while it starts (the app and its routes, models and schemas,
handlers, connections) lives as long as the process; Python's collector would still
traverse all of it on every full collection, which on a busy gateway costs a share of
each request. Once started, a process collects its garbage and freezes the rest.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Collect what start-up left as garbage, then exempt every live object from
    later collections (``gc.freeze``); objects made from here on are collected as ever."""
    gc.collect()
    gc.freeze()
