"""``python -m agentlog_cli`` runs the ``agentlog`` command."""

from agentlog_cli import main

main()
