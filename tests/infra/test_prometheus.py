"""The Prometheus alert rules (infra/prometheus/alerts.yml) against the exported metrics.

With ``promtool`` installed (Debian's package ``prometheus``) the configuration and rules
are also checked by it, and its unit tests (alerts.test.yml) run; without, those skip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .exported_metrics import EXPORTED_METRICS, metric_for, metric_names, series_names

PROMETHEUS = Path(__file__).resolve().parents[2] / "infra" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = PROMETHEUS / "alerts.test.yml"

# What the alerts are for; each has unit tests in alerts.test.yml.
ALERTS = {
    "AgentlogConsumerLagGrowing",
    "AgentlogRecordsDeadLettered",
    "AgentlogTurnFailureRateHigh",
    "AgentlogRoleDown",
    "AgentlogRoleMissing",
}


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up == 0", {"up"}),
        ('histogram_quantile(0.9, sum by (le) (rate(a_bucket{x="{b}"}[$__range])))', {"a_bucket"}),
        ("sum(x) by (role) / ignoring(y) group_left sum(z offset 5m) > 1e3", {"x", "z"}),
        ("deriv(level:x:sum[10m:1m]) > 0 and on() absent(y)", {"level:x:sum", "y"}),
    ],
)
def test_metric_names_of_an_expression(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_rules_read_only_exported_metrics() -> None:
    rules = _rules()
    recorded = {rule["record"] for rule in rules if "record" in rule}
    for name in recorded:  # level:metric:operations, a counter's metric without _total
        _, metric, _ = name.split(":")
        exported = {metric_for(metric), f"{metric}_total"} & EXPORTED_METRICS.keys()
        assert exported, f"{name} records no exported metric"
    known = series_names() | recorded
    for rule in rules:
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule['record']} reads {sorted(unknown)}"


def test_every_alert_is_labelled_explained_and_tested() -> None:
    alerts = [rule for rule in _rules() if "alert" in rule]
    assert {rule["alert"] for rule in alerts} == ALERTS
    for rule in alerts:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert firing == ALERTS, f"alerts with no test that fires them: {sorted(ALERTS - firing)}"


def test_a_missing_role_is_noticed_for_every_scraped_service() -> None:
    (rule,) = [rule for rule in _rules() if rule.get("alert") == "AgentlogRoleMissing"]
    config = yaml.safe_load(CONFIG.read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "agentlog"]
    scraped = {name for sd in job["dns_sd_configs"] for name in sd["names"]}
    for service in scraped:
        assert f'absent(up{{job="agentlog", service="{service}"}})' in rule["expr"], service
    assert rule["expr"].count("absent(") == len(scraped)


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (apt-get install -y prometheus)")
    return path


def _run(args: list[str], cwd: Path) -> tuple[int, str]:
    """promtool's exit status, and what it printed (for the failure message)."""
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    return result.returncode, f"{' '.join(args)}:\n{result.stdout}{result.stderr}"


def test_promtool_accepts_the_config_and_rules() -> None:
    promtool = _promtool()
    status, output = _run([promtool, "check", "config", CONFIG.name], PROMETHEUS)  # + alerts
    assert status == 0, output
    status, output = _run([promtool, "check", "rules", RULES.name], PROMETHEUS)
    assert status == 0, output


def test_alerts_fire_when_their_unit_tests_say(tmp_path: Path) -> None:
    """The unit tests test when alerts fire, so they run on the rules without their
    annotations: rewording a description needs no test change."""
    promtool = _promtool()
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / RULES.name).write_text(yaml.safe_dump(rules))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    status, output = _run([promtool, "test", "rules", RULE_TESTS.name], tmp_path)
    assert status == 0, output
