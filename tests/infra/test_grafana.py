"""The Grafana dashboard and provisioning (infra/grafana/) against the exported metrics and
the compose file that mounts them."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .exported_metrics import EXPORTED_METRICS, metric_for, metric_names, series_names

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "infra" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "agentlog.json"
PROVISIONING = GRAFANA / "provisioning"
DATASOURCE_VARIABLE = "${datasource}"
ROWS = ["Overview", "Pipeline", "Model & tools"]


def _dashboard() -> dict[str, Any]:
    dashboard = json.loads(DASHBOARD.read_text())
    assert isinstance(dashboard, dict)
    return dashboard


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel but the rows, collapsed rows' panels included."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def test_dashboard_reads_only_exported_metrics_and_all_of_them() -> None:
    dashboard = _dashboard()
    used: set[str] = set()
    for panel in _panels(dashboard):
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            unknown = names - series_names()
            assert not unknown, f"{panel['title']} reads {sorted(unknown)}"
            used |= {metric_for(name) for name in names}
    assert set(EXPORTED_METRICS) <= used, f"not shown: {sorted(set(EXPORTED_METRICS) - used)}"


def test_dashboard_queries_are_promql(tmp_path: Path) -> None:
    """promtool parses each query, as a recording rule, with Grafana's interval variables
    replaced by durations; skipped without promtool (Debian's package ``prometheus``)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install -y prometheus)")
    rules = [
        {"record": f"panel_{panel['id']}_{target['refId']}", "expr": target["expr"]}
        for panel in _panels(_dashboard())
        for target in panel["targets"]
    ]
    text = yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    text = text.replace("$__rate_interval", "1m").replace("$__range", "1h")
    (tmp_path / "queries.yml").write_text(text)
    result = subprocess.run(
        [promtool, "check", "rules", "queries.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_layout() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "agentlog"
    assert [p["title"] for p in dashboard["panels"] if p["type"] == "row"] == ROWS
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} is wider than the dashboard"
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


def test_panels_query_the_chosen_prometheus() -> None:
    dashboard = _dashboard()
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert (variable["name"], variable["query"]) == ("datasource", "prometheus")
    for panel in _panels(dashboard):
        sources = [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]
        for source in sources:
            assert source == {"type": "prometheus", "uid": DATASOURCE_VARIABLE}, panel["title"]


def test_provisioning_matches_the_compose_file() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    (datasource,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["type"] == "prometheus"
    assert datasource["isDefault"] is True
    assert datasource["url"] == "http://prometheus:9090"
    assert '"9090:9090"' in compose
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "agentlog.yml").read_text())[
        "providers"
    ]
    path = provider["options"]["path"]
    assert f"./infra/grafana/dashboards:{path}:ro" in compose, "dashboards are not mounted there"
    assert "./infra/grafana/provisioning:/etc/grafana/provisioning:ro" in compose
