"""Billing from the command line: verify a draft against the topics, replay the billing
read models beside the live ones, and price past usage under a plan never published."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from pydantic import ValidationError
from rich.table import Table

from gateway.billing_models import PricePlanCreate
from projections import invoices, plans
from projections.database import Database
from projections.pricing import changes
from projections.rebuild import RebuildMismatchError
from projections.verify import replay_billing, verify_invoice
from schemas.billing import CURRENCIES, PricePlan, period_bounds
from schemas.errors import DomainError
from streams.settings import Settings

from .output import console, progress


async def verify_command(settings: Settings, args: argparse.Namespace) -> int:
    """Exit status 0 when the live draft is what the topics give, 1 otherwise."""
    try:
        result = await verify_invoice(settings, args.invoice_id, args.revision)
    except LookupError as exc:
        console.print(str(exc), style="red", markup=False)
        return 2
    console.print(
        f"invoice {result.invoice_id} revision {result.revision}: {result.usage_events}"
        f" usage events; total recorded {result.recorded_total},"
        f" computed {result.computed_total}"
    )
    console.print(f"hash recorded {result.recorded_hash}\n     computed {result.computed_hash}")
    for record in result.not_counted:
        console.print(f"not counted (set aside by every consumer): {record}", markup=False)
    if result.ok:
        console.print("[green]verified: the draft is what the topics give[/green]")
        return 0
    for difference in result.differences:
        console.print(f"differs: {difference}", style="red", markup=False)
    return 1


async def replay_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.plan is not None:
        return await _what_if(settings, args)

    with progress("replaying usage and billing") as reporting:
        try:
            report = await replay_billing(
                settings, swap=args.swap, out=reporting.out, on_progress=reporting.on_progress
            )
        except RebuildMismatchError as exc:
            console.print("replay differs from the live billing read models", style="red")
            console.print(str(exc), markup=False)
            return 1
    rate = report.events / max(report.seconds, 1e-9)
    console.print(f"replay: {report.events} events in {report.seconds:.1f} s ({rate:,.0f}/s)")
    if report.set_aside:
        console.print(f"replay: {len(report.set_aside)} records set aside (dead-lettered)")
    return 0


async def _what_if(settings: Settings, args: argparse.Namespace) -> int:
    try:
        body = PricePlanCreate.model_validate_json(await asyncio.to_thread(args.plan.read_text))
    except (OSError, ValidationError) as exc:
        console.print(f"{args.plan}: {exc}", style="red", markup=False)
        return 2
    if body.currency not in CURRENCIES:
        console.print(f"unknown currency {body.currency}", style="red", markup=False)
        return 2
    plan = PricePlan(**body.model_dump(exclude={"plan_id"}))
    rows = await what_if(settings, body.plan_id, plan, args.period)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title=f"{args.period}: {body.plan_id} as in {args.plan}")
    for column in ("tenant", "currency", "now", "what if", "difference"):
        table.add_column(column, justify="left" if column == "tenant" else "right")
    for row in rows:
        table.add_row(
            row["tenant_id"], row["currency"], row["now"], row["what_if"], row["difference"]
        )
    console.print(table)
    return 0


async def what_if(
    settings: Settings, plan_id: str, plan: PricePlan, period: str
) -> list[dict[str, Any]]:
    """Per tenant on a plan in ``period``: its revenue as priced now, and with ``plan``
    in place of every version of ``plan_id``; nothing is published."""
    _start, end = period_bounds(period)
    db = Database(settings.database_url, settings.billing_schema, pool_size=1)
    rows = []
    try:
        for tenant_id in await plans.tenants_on_plans(db, end):
            try:
                now = await invoices.price_draft(db, tenant_id, "what-if", period, None, None)
                then = await invoices.price_draft(
                    db, tenant_id, "what-if", period, None, None, replacing=(plan_id, plan)
                )
            except DomainError:
                continue  # no plan in this period
            rows.append(
                {
                    "tenant_id": tenant_id,
                    "currency": now.currency,
                    "now": str(now.total),
                    "what_if": str(then.total),
                    "difference": str(then.total - now.total),
                    "changed_lines": [
                        c.model_dump(mode="json") for c in changes(now.lines, then.lines)
                    ],
                }
            )
    finally:
        await db.close()
    return rows
