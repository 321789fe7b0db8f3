"""Hypothesis strategies for every fact the read models fold, and the contexts they are
folded in."""

from __future__ import annotations

import datetime
import string

from hypothesis import strategies as st

from projections.ops import Context
from schemas import billing, billing_requests, events, usage
from schemas.base import Fact

ids = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=12)
texts = st.text(max_size=20)
counts = st.integers(min_value=0, max_value=2**31 - 1)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
arguments = st.dictionaries(ids, json_values, max_size=3)
usages = st.builds(events.UsageValue, input_tokens=counts, output_tokens=counts)
configs = st.builds(
    events.AgentConfig,
    name=ids,
    model=ids,
    system_prompt=texts,
    tools=st.lists(ids, max_size=3),
    max_steps=st.integers(1, 64),
    max_tool_calls=st.integers(0, 64),
)
tool_definitions = st.builds(
    events.ToolDefinition,
    tool_id=ids,
    name=ids,
    description=texts,
    url=ids.map(lambda path: f"http://tools.test/{path}"),
    parameters=arguments,
    timeout_s=st.floats(0.1, 60, allow_nan=False),
)
tool_call_values = st.builds(events.ToolCallValue, id=ids, name=ids, arguments=arguments)
messages = st.builds(
    events.MessageValue,
    role=st.sampled_from(["system", "user", "assistant", "tool"]),
    content=st.none() | texts,
    tool_calls=st.lists(tool_call_values, max_size=2),
    tool_call_id=st.none() | ids,
)
times = st.datetimes(
    min_value=datetime.datetime(1971, 1, 1),
    max_value=datetime.datetime(2100, 1, 1),
    timezones=st.just(datetime.UTC),
)
money = st.decimals(min_value=0, max_value=10**6, places=6, allow_nan=False, allow_infinity=False)
units = st.sampled_from(usage.UNITS)
plans = st.builds(
    billing.PricePlan,
    currency=st.sampled_from(sorted(billing.CURRENCIES)),
    models=st.dictionaries(
        ids, st.builds(billing.ModelRates, input=money, output=money), max_size=2
    ),
    tools=st.dictionaries(ids, st.builds(billing.ToolRates, per_call=money), max_size=2),
    monthly_minimum=money,
)
lines = st.builds(
    billing.InvoiceLine,
    number=counts,
    kind=st.sampled_from(["model", "tool", "minimum"]),
    resource=ids,
    unit=units,
    plan_id=st.none() | ids,
    plan_version=st.none() | counts,
    window_start=times,
    window_end=times,
    quantity=counts,
    free=counts,
    billable=counts,
    unit_price=money,
    amount=money,
    unpriced=st.booleans(),
    events=counts,
)
contexts = st.builds(
    Context,
    event_id=ids,
    tenant_id=ids,
    causation_id=ids,
    time=st.datetimes(
        min_value=datetime.datetime(1971, 1, 1),
        max_value=datetime.datetime(2100, 1, 1),
        timezones=st.just(datetime.UTC),
    ),
    partition=st.integers(0, 1023),
    offset=st.integers(0, 2**63 - 1),
)


def fact_strategies(tenant_id: str) -> dict[type[Fact], st.SearchStrategy[Fact]]:
    """A strategy per fact type; tenant facts name the event's own tenant, as every
    writer of them does."""
    turn = {"session_id": ids, "turn_id": ids}
    tool_call = {**turn, "tool_call_id": ids, "step": counts, "tool": ids}
    model_call = {**turn, "call_id": ids, "step": counts}
    rejected = {"command_id": ids, "code": ids, "detail": texts}
    return {
        events.TenantCreated: st.builds(
            events.TenantCreated, tenant_id=st.just(tenant_id), display_name=texts
        ),
        events.ApiKeyCreated: st.builds(
            events.ApiKeyCreated,
            tenant_id=st.just(tenant_id),
            key_id=ids,
            key_prefix=ids,
            key_hash=ids,
        ),
        events.ApiKeyRevoked: st.builds(
            events.ApiKeyRevoked, tenant_id=st.just(tenant_id), key_id=ids
        ),
        events.ToolRegistered: st.builds(
            events.ToolRegistered,
            tenant_id=st.just(tenant_id),
            tool=tool_definitions,
            secret_header_names=st.lists(ids, max_size=2),
        ),
        events.TenantCommandRejected: st.builds(
            events.TenantCommandRejected, tenant_id=st.just(tenant_id), **rejected
        ),
        events.AgentCreated: st.builds(
            events.AgentCreated, agent_id=ids, version=counts, config=configs
        ),
        events.AgentUpdated: st.builds(
            events.AgentUpdated,
            agent_id=ids,
            version=counts,
            config=configs,
            changed=st.lists(ids, max_size=3),
        ),
        events.AgentDisabled: st.builds(events.AgentDisabled, agent_id=ids, version=counts),
        events.AgentCommandRejected: st.builds(
            events.AgentCommandRejected, agent_id=ids, **rejected
        ),
        events.SessionCreated: st.builds(
            events.SessionCreated,
            session_id=ids,
            agent_id=ids,
            metadata=st.dictionaries(ids, texts, max_size=2),
        ),
        events.SessionCommandRejected: st.builds(
            events.SessionCommandRejected, session_id=ids, **rejected
        ),
        events.MessageAppended: st.builds(
            events.MessageAppended, **turn, message_id=ids, message=messages
        ),
        events.TurnRequested: st.builds(
            events.TurnRequested, **turn, message=texts, mode=st.sampled_from(["chat", "invoke"])
        ),
        events.TurnAccepted: st.builds(
            events.TurnAccepted,
            **turn,
            agent_id=ids,
            agent_version=counts,
            config=configs,
            tools=st.lists(tool_definitions, max_size=2),
            history=st.lists(messages, max_size=2),
            message=texts,
        ),
        events.TurnRejected: st.builds(events.TurnRejected, **turn, code=ids, detail=texts),
        events.TurnStarted: st.builds(events.TurnStarted, **turn),
        events.TurnCompleted: st.builds(
            events.TurnCompleted, **turn, message_id=ids, usage=usages, steps=counts
        ),
        events.TurnFailed: st.builds(
            events.TurnFailed, **turn, code=ids, detail=texts, usage=usages
        ),
        events.TurnCancelled: st.builds(events.TurnCancelled, **turn),
        events.TurnStepUnprocessable: st.builds(
            events.TurnStepUnprocessable,
            **turn,
            record_id=ids,
            record_type=ids,
            consumer=ids,
            reason=texts,
        ),
        events.TurnDeadlinePassed: st.builds(
            events.TurnDeadlinePassed, **turn, progress=ids, deadline_s=st.just(600.0)
        ),
        events.ModelCallRequested: st.builds(
            events.ModelCallRequested,
            **model_call,
            model=ids,
            messages=st.lists(messages, max_size=2),
            tools=st.lists(tool_definitions, max_size=1),
        ),
        events.ModelCallCompleted: st.builds(
            events.ModelCallCompleted,
            **model_call,
            text=texts,
            tool_calls=st.lists(tool_call_values, max_size=2),
            usage=usages,
            attempts=st.integers(1, 5),
        ),
        events.ModelCallFailed: st.builds(
            events.ModelCallFailed,
            **model_call,
            code=ids,
            detail=texts,
            usage=usages,
            attempts=st.integers(1, 5),
        ),
        events.ToolCallRequested: st.builds(
            events.ToolCallRequested,
            **tool_call,
            tool_id=ids,
            url=ids,
            arguments=arguments,
            timeout_s=st.floats(0.1, 60, allow_nan=False),
        ),
        events.ToolCallCompleted: st.builds(
            events.ToolCallCompleted,
            **tool_call,
            status_code=st.integers(100, 599),
            result=texts,
            truncated=st.booleans(),
        ),
        events.ToolCallFailed: st.builds(
            events.ToolCallFailed, **tool_call, code=ids, detail=texts
        ),
        events.ToolCallRejected: st.builds(
            events.ToolCallRejected,
            **tool_call,
            code=st.sampled_from(["TOOL_NOT_ALLOWED", "TOOL_SCHEMA_INVALID", "TOOL_CALL_LIMIT"]),
            detail=texts,
            arguments=arguments,
        ),
        usage.UsageRecorded: st.builds(
            usage.UsageRecorded,
            tenant_id=st.just(tenant_id),
            kind=st.sampled_from(["model", "tool"]),
            resource=ids,
            quantities=st.dictionaries(units, counts, max_size=3),
            used_at=times,
            agent_id=ids,
            session_id=ids,
            turn_id=ids,
            call_id=ids,
        ),
        usage.UsageRecordedV1: st.builds(
            usage.UsageRecordedV1,
            tenant_id=st.just(tenant_id),
            usage_id=ids,
            session_id=ids,
            turn_id=ids,
            source=st.sampled_from(["model", "tool"]),
            resource=ids,
            input_tokens=counts,
            output_tokens=counts,
        ),
        billing.OperatorCreated: st.builds(
            billing.OperatorCreated,
            operator_id=ids,
            display_name=texts,
            key_id=ids,
            key_prefix=ids,
            key_hash=ids,
        ),
        billing.DeadLetterRedriveRequested: st.builds(
            billing.DeadLetterRedriveRequested, dead_letter=ids, operator_id=ids, topic=ids
        ),
        billing.DeadLetterRedriven: st.builds(
            billing.DeadLetterRedriven,
            dead_letter=ids,
            operator_id=ids,
            topic=ids,
            partition=counts,
            offset=counts,
        ),
        billing.PricePlanPublished: st.builds(
            billing.PricePlanPublished, plan_id=ids, version=counts, plan=plans, operator_id=ids
        ),
        billing.TenantPlanAssigned: st.builds(
            billing.TenantPlanAssigned,
            tenant_id=st.just(tenant_id),
            plan_id=ids,
            version=counts,
            effective_from=times,
            operator_id=ids,
        ),
        billing_requests.BillingCommandRejected: st.builds(
            billing_requests.BillingCommandRejected,
            aggregate_id=st.just(tenant_id),
            command_id=ids,
            code=st.sampled_from(["PLAN_NOT_FOUND", "CURRENCY_MISMATCH"]),
            detail=ids,
        ),
        billing.TenantPlanWithdrawn: st.builds(
            billing.TenantPlanWithdrawn,
            tenant_id=st.just(tenant_id),
            effective_from=times,
            operator_id=ids,
            repriced_periods=st.lists(st.just("2026-11"), max_size=1),
        ),
        billing.InvoiceDraftRequested: st.builds(
            billing.InvoiceDraftRequested,
            tenant_id=st.just(tenant_id),
            invoice_id=ids,
            period=st.just("2026-11"),
            operator_id=ids,
        ),
        billing.InvoiceDrafted: st.builds(
            billing.InvoiceDrafted,
            tenant_id=st.just(tenant_id),
            invoice_id=ids,
            revision=counts,
            request_id=ids,
            period=st.just("2026-11"),
            currency=st.just("USD"),
            lines=st.lists(lines, max_size=2),
            subtotal=money,
            total=money,
            plans=st.just([]),
            offsets=st.dictionaries(st.integers(0, 3), counts, max_size=2),
            usage_events=counts,
            content_hash=ids,
        ),
        billing.InvoiceDraftRejected: st.builds(
            billing.InvoiceDraftRejected,
            tenant_id=st.just(tenant_id),
            invoice_id=ids,
            request_id=ids,
            code=ids,
            detail=texts,
        ),
        # Facts the fold ignores belong in the properties too.
        events.TurnCancelRequested: st.builds(events.TurnCancelRequested, **turn),
        events.OutputDelta: st.builds(
            events.OutputDelta, **turn, call_id=ids, index=counts, text=texts
        ),
    }


@st.composite
def facts_in_context(draw: st.DrawFn) -> tuple[Fact, Context]:
    ctx = draw(contexts)
    fact = draw(st.one_of(*fact_strategies(ctx.tenant_id).values()))
    return fact, ctx
