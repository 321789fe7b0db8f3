"""Peers' benchmark: durable in-process agent runtimes a user might pick instead,
measured the way agentlog's turns are, on this machine's Postgres.

- LangGraph with ``PostgresSaver`` (a checkpoint per step): a model-only graph, and
  model → tool → model;
- DBOS: a workflow of one step, and of three steps.

The model and the tool answer at once (zero latency), as the dev model does. Each
configuration runs ``--runs`` times one after another, each run a new thread or
workflow id; prints p50/p99 latency and the CPU time per run of this process plus
Postgres's processes, and writes the figures as JSON (``--json FILE``) for
``bench_platform --peers FILE`` to set agentlog's figures beside them.

Runs in its own environment (``make bench-peers`` makes ``.venv-peers``): the peers'
dependencies are not agentlog's.
"""

import argparse
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

from tests.bench.cpu import postgres_seconds

DATABASE = "postgresql://postgres@127.0.0.1:5432/test"


def measure(name: str, run: Callable[[int], Any], runs: int) -> dict[str, Any]:
    for i in range(20):  # warm-up
        run(-1 - i)
    latencies = []
    pg_before, cpu_before = postgres_seconds(), time.process_time()
    for i in range(runs):
        started = time.perf_counter()
        run(i)
        latencies.append((time.perf_counter() - started) * 1000)
    cpu_ms = (time.process_time() - cpu_before) * 1000 / runs
    pg_ms = (postgres_seconds() - pg_before) * 1000 / runs
    latencies.sort()
    result = {
        "name": name,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "cpu_ms": cpu_ms + pg_ms,
        "client_cpu_ms": cpu_ms,
        "postgres_cpu_ms": pg_ms,
    }
    print(
        f"{name:<44} p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms  "
        f"CPU per run {result['cpu_ms']:5.1f} ms (client {cpu_ms:.1f}, Postgres {pg_ms:.1f})",
        flush=True,
    )
    return result


def langgraph(schema: str, runs: int) -> list[dict[str, Any]]:
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.graph import END, START, MessagesState, StateGraph

    def model(state: MessagesState) -> dict[str, Any]:
        last = state["messages"][-1]
        if isinstance(last, HumanMessage) and last.content == "use the tool":
            call = {"name": "echo", "args": {"text": "hi"}, "id": "call-1"}
            return {"messages": [AIMessage(content="", tool_calls=[call])]}
        return {"messages": [AIMessage(content=f"echo: {last.content}")]}

    def tool(state: MessagesState) -> dict[str, Any]:
        call = state["messages"][-1].tool_calls[0]
        return {"messages": [ToolMessage(content="hi", tool_call_id=call["id"])]}

    def route(state: MessagesState) -> str:
        return "tool" if getattr(state["messages"][-1], "tool_calls", None) else END

    graph = StateGraph(MessagesState)
    graph.add_node("model", model)
    graph.add_node("tool", tool)
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", route, ["tool", END])
    graph.add_edge("tool", "model")
    url = f"{DATABASE}?options=-csearch_path%3D{schema}"
    results = []
    with PostgresSaver.from_conn_string(url) as saver:
        saver.setup()
        app = graph.compile(checkpointer=saver)
        for label, message in (("model only", "hello"), ("model -> tool -> model", "use the tool")):
            tag = uuid.uuid4().hex[:8]

            def run(i: int, message: str = message, tag: str = tag) -> Any:
                config = {"configurable": {"thread_id": f"{tag}-{i}"}}
                return app.invoke({"messages": [HumanMessage(message)]}, config)

            results.append(measure(f"LangGraph + PostgresSaver, {label}", run, runs))
    return results


def dbos(schema: str, runs: int) -> list[dict[str, Any]]:
    from dbos import DBOS, SetWorkflowID

    DBOS(
        config={
            "name": "bench-peers",
            "system_database_url": DATABASE,
            "dbos_system_schema": schema,
            "log_level": "WARNING",
        }
    )

    @DBOS.step()
    def model(message: str) -> str:
        return f"echo: {message}"

    @DBOS.step()
    def tool(text: str) -> str:
        return text

    @DBOS.workflow()
    def one_step(message: str) -> str:
        answer: str = model(message)
        return answer

    @DBOS.workflow()
    def three_steps(message: str) -> str:
        model(message)
        tool("hi")
        answer: str = model("hi")
        return answer

    DBOS.launch()
    results = []
    try:
        for label, workflow in (("1 step", one_step), ("3 steps", three_steps)):
            tag = uuid.uuid4().hex[:8]

            def run(i: int, workflow: Any = workflow, tag: str = tag) -> Any:
                with SetWorkflowID(f"{tag}-{i}"):
                    return workflow("hello")

            results.append(measure(f"DBOS, {label}", run, runs))
    finally:
        DBOS.destroy()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    schemas = {name: f"bench_{name}_{uuid.uuid4().hex[:8]}" for name in ("langgraph", "dbos")}
    with psycopg.connect(DATABASE, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schemas["langgraph"]}"')
    try:
        results = langgraph(schemas["langgraph"], args.runs) + dbos(schemas["dbos"], args.runs)
    finally:
        with psycopg.connect(DATABASE, autocommit=True) as conn:
            for schema in schemas.values():
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out)
    os.environ.pop("DBOS__APPVERSION", None)


if __name__ == "__main__":
    main()
