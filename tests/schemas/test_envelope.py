"""Whose a record is: a fact naming a tenant in its data is neither written nor read
under another tenant's envelope."""

from __future__ import annotations

import datetime

import pytest

from schemas.billing import PLATFORM, InvoiceDraftRequested, OperatorCreated
from schemas.envelope import (
    EnvelopeError,
    TenantMismatchError,
    envelope,
    from_kafka,
    to_kafka,
)
from schemas.events import TenantCreated
from schemas.usage import UsageRecorded

USAGE = UsageRecorded(
    tenant_id="tenant-a",
    kind="tool",
    resource="search",
    quantities={"calls": 1},
    used_at=datetime.datetime(2026, 11, 5, tzinfo=datetime.UTC),
)
DRAFT = InvoiceDraftRequested(
    tenant_id="tenant-a", invoice_id="inv-1", period="2026-11", operator_id="op-1"
)


@pytest.mark.parametrize(
    "fact", [USAGE, DRAFT, TenantCreated(tenant_id="tenant-a", display_name="A")]
)
@pytest.mark.parametrize("other", ["tenant-b", "", PLATFORM, "tenant-a "])
def test_a_fact_of_one_tenant_is_not_written_under_another(
    fact: UsageRecorded | InvoiceDraftRequested | TenantCreated, other: str
) -> None:
    with pytest.raises(TenantMismatchError):
        envelope(fact, source="tests", tenant_id=other)


@pytest.mark.parametrize("fact", [USAGE, DRAFT])
def test_a_record_whose_two_tenants_differ_is_unreadable(
    fact: UsageRecorded | InvoiceDraftRequested,
) -> None:
    key, value, headers = to_kafka(envelope(fact, source="tests", tenant_id="tenant-a"))
    assert from_kafka(key, value, headers).tenant_id == "tenant-a"
    forged = [(n, b"tenant-b" if n == "ce_tenantid" else v) for n, v in headers]
    with pytest.raises(EnvelopeError, match="tenant_id is not the record's tenantid"):
        from_kafka(key, value, forged)


def test_a_fact_naming_no_tenant_is_the_envelopes() -> None:
    operator = OperatorCreated(
        operator_id="op-1", display_name="ops", key_id="k", key_prefix="p", key_hash="h"
    )
    assert envelope(operator, source="tests", tenant_id=PLATFORM).tenant_id == PLATFORM
