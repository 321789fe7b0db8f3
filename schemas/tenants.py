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


class _NewKey(_TenantFact):
    key_id: str
    key_prefix: str
    key_hash: str = Field(description="sha256 of the key; the key itself is never stored")


class ApiKeyCreateRequested(_NewKey):
    """``agentlog.tenant.api_key_create_requested.v1``: a new key for the tenant was
    asked for; only its hash is recorded."""

    name = "api_key_create_requested"


class ApiKeyRevokeRequested(_TenantFact):
    """``agentlog.tenant.api_key_revoke_requested.v1``: the key's revocation was asked for."""

    name = "api_key_revoke_requested"
    key_id: str


class ApiKeyCreated(_NewKey):
    """``agentlog.tenant.api_key_created.v1``: a key was issued to the tenant; only
    its hash is recorded."""

    name = "api_key_created"


class ApiKeyRevoked(_TenantFact):
    """``agentlog.tenant.api_key_revoked.v1``: the key authenticates nothing from now on."""

    name = "api_key_revoked"
    key_id: str


class ToolRegisterRequested(_TenantFact):
    """``agentlog.tenant.tool_register_requested.v1``: a client asked to register an HTTP
    tool under a name that is free (``replace`` false) or whatever the name holds
    (``replace`` true). Each registration has a tool id of its own, under which the
    gateway sealed its secret headers; their values are not in it."""

    name = "tool_register_requested"
    tool: ToolDefinition
    secret_header_names: list[str] = Field(default_factory=list)
    replace: bool = False


class ToolRegistered(_TenantFact):
    """``agentlog.tenant.tool_registered.v1``: the tenant's tool of this name is this
    one from now on (a first registration, or a replacement). Secret header values are
    not in it."""

    name = "tool_registered"
    tool: ToolDefinition
    secret_header_names: list[str] = Field(default_factory=list)


class TenantCommandRejected(_TenantFact):
    """``agentlog.tenant.command_rejected.v1``: the command handler refused a tenant's
    command (``command_id``), with the code and why."""

    name = "command_rejected"
    command_id: str
    code: str
    detail: str
