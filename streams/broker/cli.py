"""The broker's command line, shared by ``agentlog broker`` and ``python -m streams.broker``.

The broker itself is imported only when it runs: the agentlog command adds these options
to its parser on every start, and loading the broker (kio) would slow every sub-command.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import uvloop

from streams.logs import configure_logging

if TYPE_CHECKING:
    from .server import BrokerConfig


def add_broker_options(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument("--host", default=env("AGENTLOG_BROKER_HOST", "127.0.0.1"))
    p.add_argument(
        "--port",
        type=int,
        default=int(env("AGENTLOG_BROKER_PORT", "9092")),
        help="port to listen on (0 = any free port)",
    )
    p.add_argument(
        "--data-dir", type=Path, default=Path(env("AGENTLOG_BROKER_DATA_DIR", ".agentlog/broker"))
    )
    p.add_argument("--advertised-host", help="host clients are told to connect to")
    p.add_argument(
        "--fsync",
        choices=("always", "interval"),
        default=env("AGENTLOG_BROKER_FSYNC", "interval"),
        help="always: fsync before acknowledging; interval: every --fsync-interval-ms",
    )
    p.add_argument("--fsync-interval-ms", type=int, default=1000)
    p.add_argument("--max-request-bytes", type=int, default=100 * 1024 * 1024)
    p.add_argument("--default-partitions", type=int, default=1)
    p.add_argument(
        "--no-auto-create-topics",
        dest="auto_create_topics",
        action="store_false",
        help="do not create unknown topics on metadata requests",
    )
    p.add_argument("--retention-check-interval-ms", type=int, default=5000)
    p.add_argument("--group-initial-rebalance-delay-ms", type=int, default=0)
    p.add_argument("--group-min-session-timeout-ms", type=int, default=6000)
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")


def broker_config(args: argparse.Namespace) -> BrokerConfig:
    """The broker's configuration from options added by ``add_broker_options``."""
    from .server import BrokerConfig

    return BrokerConfig(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        advertised_host=args.advertised_host,
        fsync=args.fsync,
        fsync_interval_ms=args.fsync_interval_ms,
        max_request_bytes=args.max_request_bytes,
        auto_create_topics=args.auto_create_topics,
        default_partitions=args.default_partitions,
        retention_check_interval_ms=args.retention_check_interval_ms,
        group_initial_rebalance_delay_ms=args.group_initial_rebalance_delay_ms,
        group_min_session_timeout_ms=args.group_min_session_timeout_ms,
    )


def run(args: argparse.Namespace) -> None:
    """Serve with these options until SIGTERM or SIGINT (logging already configured)."""
    from .runner import serve

    uvloop.run(serve(broker_config(args), args.metrics_port))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m streams.broker", description="run the embedded Kafka-protocol broker"
    )
    parser.add_argument("--log-level", default=os.environ.get("AGENTLOG_LOG_LEVEL", "INFO"))
    add_broker_options(parser)
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    run(args)
