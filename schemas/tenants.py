"""A tenant's facts: its creation, its API keys and the HTTP tools it registers
(aggregate: the tenant, keyed by tenant id)."""

from __future__ import annotations

from pydantic import Field

from .base import Fact
from .values import ToolDefinition


class _TenantFact(Fact):
    subsystem = "tenant"
    subject_field = "tenant_id"
    tenant_id: str


class TenantCreated(_TenantFact):
    """``agentlog.tenant.created.v1``: a tenant was created (by an operator)."""

    name = "created"
    display_name: str


class ApiKeyCreated(_TenantFact):
    """``agentlog.tenant.api_key_created.v1``: a key was issued to the tenant; only
    its hash is recorded."""

    name = "api_key_created"
    key_id: str
    key_prefix: str
    key_hash: str = Field(description="sha256 of the key; the key itself is never stored")


class ApiKeyRevoked(_TenantFact):
    """``agentlog.tenant.api_key_revoked.v1``: the key authenticates nothing from now on."""

    name = "api_key_revoked"
    key_id: str


class ToolRegistered(_TenantFact):
    """``agentlog.tenant.tool_registered.v1``: the tenant registered an HTTP tool, or
    registered its name again (an update). Secret header values are not in it."""

    name = "tool_registered"
    tool: ToolDefinition
    secret_header_names: list[str] = Field(default_factory=list)
