"""A bulk pass over the machine's cores: the partitions folded in processes of their
own, their folds merged in a fixed order.

Decoding and folding a record is Python work, one core's worth per process. Each
process takes partition numbers (a number on every topic, so a turn's command and its
events, keyed alike, are in one process), the largest first to the least loaded, folds
its partitions one after the other as ``bulk.fold`` does, and sends its fold back.
``BulkFold.merged`` joins them; where a row's outcome would depend on the order of two
processes' records, it refuses (``PartsOverlapError``) and the caller folds every
partition in one place instead.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkServerContext
from typing import Any

from streams.scan import Range

from . import bulk
from .bulk import BulkFold, FoldStopped, NotFoldableInMemory

# Below this many records starting the processes (the first time, a second of imports)
# costs more than the second core saves.
PARALLEL_FROM = 50_000


def _processes() -> ForkServerContext:
    """Processes forked from a server that imported, once per parent, what a fold needs
    and the parent's script: a spawned process imports all of it again, a second or two
    each, and a fork of the parent would copy its threads' locks (the gateway's). (A
    parent started with ``python -m`` has each process import its module again.)"""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", __name__])
    return context


class PartsOverlapError(NotFoldableInMemory):
    """The processes' folds cannot be merged; folding in one place can."""


def _work(conn: Connection, bootstrap_servers: str, ranges: list[Range], json_columns: Any) -> None:
    """A process's fold of its ranges, sent back over ``conn`` with its progress."""
    gc.disable()  # it keeps what it makes until it ends: collecting finds nothing
    try:
        done = bulk.fold(bootstrap_servers, ranges, json_columns, lambda n: conn.send(n))
        conn.send(done)
    except Exception as exc:
        conn.send(RuntimeError(f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def fold(
    bootstrap_servers: str,
    ranges: list[Range],
    json_columns: dict[str, frozenset[str]],
    progress: Callable[[int], None],
    processes: int | None = None,
    at_least: int = PARALLEL_FROM,
    stop: threading.Event | None = None,
) -> BulkFold:
    """``bulk.fold`` of ``ranges``, in ``processes`` processes (the cores, by default)
    when there are ``at_least`` records and partitions to share. Once ``stop`` is set,
    FoldStopped within a fraction of a second, the processes ended."""
    cores = os.cpu_count() or 1
    sizes: dict[int, int] = {}  # records per partition number, over the topics
    for r in ranges:
        if r.start < r.end:
            sizes[r.partition] = sizes.get(r.partition, 0) + r.end - r.start
    # Up to two processes a core: three partitions on two cores are three processes the
    # system shares out evenly, where two processes would take two partitions and one.
    processes = min(processes or 2 * cores, len(sizes))
    if processes < 2 or sum(sizes.values()) < at_least:
        return bulk.fold(bootstrap_servers, ranges, json_columns, progress, stop)
    shares: list[list[int]] = [[] for _ in range(processes)]
    loads = [0] * processes
    for partition in sorted(sizes, key=lambda p: (-sizes[p], p)):  # largest first
        least = loads.index(min(loads))
        shares[least].append(partition)
        loads[least] += sizes[partition]
    parts = [[r for r in ranges if r.partition in share] for share in shares]
    context = _processes()
    workers = []
    for share in parts:
        theirs, mine = context.Pipe(duplex=False)
        process = context.Process(
            target=_work,
            args=(mine, bootstrap_servers, share, json_columns),
            name="agentlog-bulk-fold",
            daemon=True,
        )
        process.start()
        mine.close()
        workers.append((process, theirs))
    folds: dict[Connection, BulkFold] = {}
    try:
        waiting = [conn for _process, conn in workers]
        while waiting:
            if stop is not None and stop.is_set():
                raise FoldStopped(f"stopped with {len(waiting)} processes folding")
            for ready in wait(waiting, timeout=0.1):
                assert isinstance(ready, Connection)
                message = ready.recv()  # EOFError: the process died
                if isinstance(message, int):
                    progress(message)
                elif isinstance(message, BulkFold):
                    folds[ready] = message
                    waiting.remove(ready)
                else:
                    raise message
    finally:
        for process, conn in workers:
            conn.close()
            if process.is_alive():
                process.terminate()
            process.join()
    try:
        done = BulkFold.merged([folds[conn] for _process, conn in workers])
    except NotFoldableInMemory as exc:
        raise PartsOverlapError(str(exc)) from exc
    order = {(r.topic, r.partition): n for n, r in enumerate(ranges)}
    done.set_aside.sort(
        key=lambda aside: (order[aside[0].topic, aside[0].partition], aside[0].offset)
    )
    return done
