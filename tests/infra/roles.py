"""agentlog's processes as the CLI spells their commands: every role the runner knows, so a
role added to the code and not to a deployment file fails that file's tests."""

from __future__ import annotations

from workers.runner import ROLES

MIGRATE = ("agentlog", "migrate")
GATEWAY = ("agentlog", "gateway")
ROLE_COMMANDS = frozenset(
    {MIGRATE, GATEWAY}
    | {
        ("agentlog", "projector") if role == "projector" else ("agentlog", "worker", role)
        for role in ROLES
    }
)
