"""Every fact type, in one registry that other modules import from (``events.TurnAccepted``).

Records on topics are past-tense facts: a command is recorded as the fact that it was
requested (``TurnRequested``), its outcomes as further facts (``TurnAccepted``,
``ToolCallFailed``). Each aggregate or subsystem defines its facts in a module of its own:
``tenants``, ``agents``, ``sessions``, ``turns`` (with the messages a turn adds),
``model_calls``, ``tool_calls``, ``output`` (what subscribers stream), ``usage``
(``events.UsageRecorded`` names the newest) and ``billing``. The values facts carry are
``values``'s, named here too (``events.AgentConfig``). Importing this module registers
every fact type.
"""

from __future__ import annotations

# Facts register in the order their modules are imported, and the catalog and the AsyncAPI
# document list them in that order: aggregate by aggregate, along a turn.
# isort: off
from . import billing as billing
from . import tenants, agents, sessions, turns, model_calls, tool_calls, output  # noqa: F401
from . import billing_requests  # noqa: F401

# isort: on
from .agents import AgentCommandRejected as AgentCommandRejected
from .agents import AgentCreated as AgentCreated
from .agents import AgentCreateRequested as AgentCreateRequested
from .agents import AgentDisabled as AgentDisabled
from .agents import AgentDisableRequested as AgentDisableRequested
from .agents import AgentUpdated as AgentUpdated
from .agents import AgentUpdateRequested as AgentUpdateRequested
from .model_calls import ModelCallCompleted as ModelCallCompleted
from .model_calls import ModelCallFailed as ModelCallFailed
from .model_calls import ModelCallRequested as ModelCallRequested
from .output import OutputDelta as OutputDelta
from .output import OutputMessage as OutputMessage
from .sessions import SessionCommandRejected as SessionCommandRejected
from .sessions import SessionCreated as SessionCreated
from .sessions import SessionCreateRequested as SessionCreateRequested
from .tenants import ApiKeyCreated as ApiKeyCreated
from .tenants import ApiKeyCreateRequested as ApiKeyCreateRequested
from .tenants import ApiKeyRevoked as ApiKeyRevoked
from .tenants import ApiKeyRevokeRequested as ApiKeyRevokeRequested
from .tenants import TenantCommandRejected as TenantCommandRejected
from .tenants import TenantCreated as TenantCreated
from .tenants import ToolRegistered as ToolRegistered
from .tenants import ToolRegisterRequested as ToolRegisterRequested
from .tool_calls import ToolCallCompleted as ToolCallCompleted
from .tool_calls import ToolCallFailed as ToolCallFailed
from .tool_calls import ToolCallRejected as ToolCallRejected
from .tool_calls import ToolCallRequested as ToolCallRequested
from .tool_calls import ToolRejectCode as ToolRejectCode
from .tool_calls import _ToolCallFact as _ToolCallFact
from .turns import MessageAppended as MessageAppended
from .turns import TurnAccepted as TurnAccepted
from .turns import TurnCancelled as TurnCancelled
from .turns import TurnCancelRequested as TurnCancelRequested
from .turns import TurnCompleted as TurnCompleted
from .turns import TurnDeadlinePassed as TurnDeadlinePassed
from .turns import TurnFailed as TurnFailed
from .turns import TurnRejected as TurnRejected
from .turns import TurnRequested as TurnRequested
from .turns import TurnStarted as TurnStarted
from .turns import TurnStepUnprocessable as TurnStepUnprocessable
from .turns import _TurnFact as _TurnFact
from .usage import UsageRecorded as UsageRecorded
from .usage import UsageRecordedV1 as UsageRecordedV1
from .values import AgentConfig as AgentConfig
from .values import MessageValue as MessageValue
from .values import ToolCallValue as ToolCallValue
from .values import ToolDefinition as ToolDefinition
from .values import UsageValue as UsageValue
