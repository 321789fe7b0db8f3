"""How an agentlog process stops: gracefully on SIGTERM or SIGINT (or when it decides to,
``begin_shutdown``), within a deadline."""

from __future__ import annotations

import asyncio
import logging
import os
import signal


def stop_event(shutdown_timeout_s: float) -> asyncio.Event:
    """Set on SIGTERM or SIGINT. Shutdown then has ``shutdown_timeout_s`` to finish
    (consumers commit, producers flush): past it, or on a second signal, the process
    exits anyway, whether or not Kafka and Postgres still answer (the children of
    ``agentlog up`` are told by their death signal)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, begin_shutdown, stop, shutdown_timeout_s)
    return stop


def begin_shutdown(stop: asyncio.Event, shutdown_timeout_s: float) -> None:
    """Set ``stop``, as a signal does, with the same deadline; a second call (a second
    signal) exits at once."""
    if stop.is_set():
        _exit_now("a second signal")
    stop.set()
    loop = asyncio.get_running_loop()
    loop.call_later(shutdown_timeout_s, _exit_now, f"{shutdown_timeout_s:g} s")


def _exit_now(why: str) -> None:
    logging.getLogger("agentlog").error("shutdown did not finish: exiting after %s", why)
    logging.shutdown()
    os._exit(1)
