"""``python -m streams.broker [options]`` runs the broker, as ``agentlog broker`` does."""

from __future__ import annotations

import sys

from agentlog_cli import main

main(["broker", *sys.argv[1:]])
