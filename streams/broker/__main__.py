"""``python -m streams.broker [options]`` runs the broker, as ``agentlog broker`` does."""

from .cli import main

main()
