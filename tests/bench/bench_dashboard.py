"""The dashboard's overview with 100,000 turns in the read models: render time of the
page (``GET /dashboard``) and of its live data (``/dashboard/api/overview``), for a
window holding all of them (24 h) and one holding a tenth (1 h).

    python -m tests.bench.bench_dashboard [--turns N] [--renders R]

The turns (of 100 tenants, 10 sessions each; one in ten failed) are written into the
``turns``, ``sessions`` and ``tenants`` tables with one ``INSERT … SELECT``, and summed
per minute into the activity read model (two model calls a turn), as the projector would
have left them; the operator through the billing projection. The
gateway app runs in this process (ASGI), against the embedded broker and this
machine's Postgres and Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

from gateway.app import create_app
from gateway.auth import issue_operator_key
from projections.migrate import BILLING_SCRIPTS, upgrade
from projections.ops import BILLING
from projections.secrets import new_key
from projections.store import ProjectionStore
from schemas.billing import PLATFORM, OperatorCreated
from schemas.envelope import envelope
from streams.catalog import Catalog, ensure_topics
from streams.handler import Position
from streams.settings import Settings
from tests.e2e.conftest import DATABASE_URL, drop_schemas
from tests.kafka import BrokerProcess
from tests.services import redis_url

# Turns end over the last 24 hours, the newest a tenth of them in the last hour.
FILL = """
INSERT INTO {s}.tenants (tenant_id, display_name, created_at)
SELECT 'tenant-' || t, 'Tenant ' || t, now() - interval '30 days' FROM generate_series(1, 100) t;
INSERT INTO {s}.sessions (session_id, tenant_id, agent_id, metadata, created_at)
SELECT 'session-' || s, 'tenant-' || (s % 100 + 1), 'agent-' || (s % 100 + 1), '{}',
       now() - interval '2 days'
FROM generate_series(1, 1000) s;
INSERT INTO {s}.turns (turn_id, tenant_id, session_id, status, mode, request, steps,
                       input_tokens, output_tokens, error_code, requested_at, finished_at)
SELECT 'turn-' || n, 'tenant-' || (n % 1000 % 100 + 1), 'session-' || (n % 1000 + 1),
       CASE WHEN n % 10 = 0 THEN 'failed' ELSE 'completed' END, 'chat', 'hello', 2,
       100 + n % 50, 20 + n % 30,
       CASE WHEN n % 10 = 0 THEN (ARRAY['MODEL_UNAVAILABLE', 'TOOL_TIMEOUT'])[n % 2 + 1] END,
       ended - (200 + n % 3000) * interval '1 millisecond', ended
FROM (SELECT n, CASE WHEN n % 10 = 0 THEN now() - random() * interval '1 hour'
                     ELSE now() - interval '1 hour' - random() * interval '23 hours' END AS ended
      FROM generate_series(1, %(turns)s) n) t;
ANALYZE {s}.turns;
CREATE TEMP VIEW ended AS
SELECT t.*, sp.span, sp.start, extract(epoch FROM t.finished_at - t.requested_at) * 1000 AS ms
FROM {s}.turns t, LATERAL (
    SELECT span, date_trunc('hour', t.finished_at)
           + (extract(minute FROM t.finished_at)::int / span * span) * interval '1 minute' AS start
    FROM unnest(ARRAY[1, 10, 60]) span) sp;
INSERT INTO {s}.turn_activity
SELECT span, start, t.tenant_id, s.agent_id, t.status, coalesce(t.error_code, ''), count(*),
       sum(round(t.ms)), sum(t.input_tokens), sum(t.output_tokens)
FROM ended t JOIN {s}.sessions s USING (session_id) GROUP BY 1, 2, 3, 4, 5, 6;
INSERT INTO {s}.turn_latency
SELECT span, start, status, floor(log(2, ms::numeric) * 8), count(*)
FROM ended GROUP BY 1, 2, 3, 4;
INSERT INTO {s}.model_activity
SELECT span, start, 'openai', (ARRAY['gpt-4o', 'gpt-4o-mini', 'o3'])[length(turn_id) % 3 + 1],
       'completed', '', floor(log(2, ms::numeric / 2) * 8), 2 * count(*), sum(round(ms)),
       sum(input_tokens), 0, sum(output_tokens)
FROM ended GROUP BY 1, 2, 3, 4, 5, 6, 7;
ANALYZE {s}.turn_activity;
ANALYZE {s}.turn_latency;
ANALYZE {s}.model_activity;
"""


async def measure(bootstrap: str, schema: str, turns: int, renders: int) -> None:
    catalog = Catalog(f"{schema}.")
    await ensure_topics(bootstrap, catalog, 1)
    await asyncio.to_thread(upgrade, DATABASE_URL, schema)
    await asyncio.to_thread(upgrade, DATABASE_URL, f"{schema}_billing", BILLING_SCRIPTS)
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        started = time.perf_counter()
        fill = FILL.replace("{s}", f'"{schema}"').replace("%(turns)s", str(int(turns)))
        conn.execute(fill.encode())
        print(f"{turns:,} turns written in {time.perf_counter() - started:.1f} s", flush=True)
    key, requested = issue_operator_key("bench")
    operator = OperatorCreated(**requested.model_dump())  # as the billing decider decides
    store = ProjectionStore(DATABASE_URL, f"{schema}_billing", BILLING)
    await store.apply(
        [(envelope(operator, source="/bench", tenant_id=PLATFORM), Position("b", 0, 0))]
    )
    await store.close()
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=catalog.prefix,
        database_url=DATABASE_URL,
        redis_url=redis_url(),
        database_schema=schema,
        secrets_key=new_key(),
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gateway",
            headers={"Authorization": f"Bearer {key}"},
        ) as http,
    ):
        for path in ("/dashboard?window=24h", "/dashboard?window=1h", "/dashboard/api/overview"):
            for _ in range(3):  # warm-up: pools, plans, templates
                assert (await http.get(path)).status_code == 200
            times = []
            for _ in range(renders):
                started = time.perf_counter()
                response = await http.get(path)
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.text
            times.sort()
            p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
            print(
                f"{path:<28} median {statistics.median(times):6.1f} ms, p95 {p95:6.1f} ms"
                f" ({renders} renders)",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=100_000)
    parser.add_argument("--renders", type=int, default=100)
    args = parser.parse_args()
    schema = f"benchdash_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerProcess(Path(tmp) / "broker").start()
        try:
            asyncio.run(measure(broker.bootstrap, schema, args.turns, args.renders))
        finally:
            broker.stop()
            drop_schemas(schema)


if __name__ == "__main__":
    main()
