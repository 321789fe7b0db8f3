"""docker-compose.yml against the code: its services, their commands, their environment,
and what its Prometheus scrapes.

Runs ``docker-compose config`` (the Debian package ``docker-compose``); no Docker engine is
needed. Without the binary the tests that need it fail, unless AGENTLOG_TEST_SKIP_COMPOSE=1.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .environment import OTEL_VARIABLES, SETTINGS_VARIABLES, unknown_variables
from .roles import GATEWAY, MIGRATE, ROLE_COMMANDS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS_CONFIG = ROOT / "infra" / "prometheus" / "prometheus.yml"

INFRA_SERVICES = {"kafka", "postgres", "redis", "qdrant"}
MONITORING_SERVICES = {"prometheus", "grafana", "jaeger"}
HEALTH_CHECKED = {"kafka", "postgres", "redis"}
_YAML_TO_JSON = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"


def _docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is not None:
        return path
    if os.environ.get("AGENTLOG_TEST_SKIP_COMPOSE") == "1":
        pytest.skip("docker-compose is not installed (AGENTLOG_TEST_SKIP_COMPOSE=1)")
    pytest.fail(
        "the docker-compose binary is missing: install the Debian package "
        "(apt-get install -y docker-compose), or set AGENTLOG_TEST_SKIP_COMPOSE=1 to skip",
        pytrace=False,
    )


def _run(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def _parse_yaml(text: str, compose: str) -> Any:
    """Parse with PyYAML here if installed, else with the Python that runs docker-compose.

    docker-compose 1.x (Debian's) is a Python program that needs PyYAML itself, so its
    interpreter can always read what it printed.
    """
    try:
        import yaml
    except ImportError:
        pass
    else:
        return yaml.safe_load(text)
    with open(compose, "rb") as f:
        first_line = f.readline().decode(errors="replace")
    if not first_line.startswith("#!"):
        pytest.fail(
            "docker-compose printed YAML, and neither PyYAML nor a Python docker-compose "
            "is available to read it: install PyYAML or a docker-compose with --format json",
            pytrace=False,
        )
    converted = _run([*shlex.split(first_line[2:]), "-c", _YAML_TO_JSON], stdin=text)
    assert converted.returncode == 0, f"could not read docker-compose's YAML:\n{converted.stderr}"
    return json.loads(converted.stdout)


@pytest.fixture(scope="module")
def compose_config() -> dict[str, Any]:
    """The resolved compose file (anchors merged, variables interpolated), as data."""
    compose = _docker_compose()
    command = [compose, "-f", COMPOSE_FILE.name, "config"]
    json_output = "--format" in _run([compose, "config", "--help"]).stdout
    if json_output:
        command += ["--format", "json"]
    result = _run(command)
    assert result.returncode == 0, f"{shlex.join(command)} failed:\n{result.stderr}"
    config = json.loads(result.stdout) if json_output else _parse_yaml(result.stdout, compose)
    assert isinstance(config, dict)
    return config


def _services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = config["services"]
    assert isinstance(services, dict)
    return services


def _agentlog_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from our Dockerfile."""
    return {name: svc for name, svc in _services(config).items() if "build" in svc}


def _environment(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE or bare KEY (passed through from the shell)
        pairs = [item.split("=", 1) for item in env]
        return {pair[0]: pair[1] if len(pair) == 2 else None for pair in pairs}
    return {key: None if value is None else str(value) for key, value in env.items()}


def _command(service: dict[str, Any]) -> tuple[str, ...]:
    command = service.get("command", [])
    return tuple(shlex.split(command) if isinstance(command, str) else command)


def _by_command(config: dict[str, Any]) -> dict[tuple[str, ...], str]:
    """The agentlog services by the command they run, ``agentlog`` included."""
    services = _agentlog_services(config)
    return {("agentlog", *_command(svc)): name for name, svc in services.items()}


def test_compose_config_lists_the_services(compose_config: dict[str, Any]) -> None:
    services = _services(compose_config)
    missing = INFRA_SERVICES - services.keys()
    assert not missing, f"infrastructure services missing: {sorted(missing)}"
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", services["kafka"]["image"])
    kafka_env = _environment(services["kafka"])
    assert kafka_env.get("KAFKA_PROCESS_ROLES") == "broker,controller", "KRaft, one node"
    assert not any("ZOOKEEPER" in key for key in kafka_env), "Kafka 4 has no ZooKeeper mode"
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    assert services["qdrant"]["image"].startswith("qdrant/qdrant")
    for name in HEALTH_CHECKED:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_every_agentlog_variable_is_a_settings_field() -> None:
    """Any AGENTLOG_* or OTEL_* name in the file, anchors and ${...} included: a typo fails
    here."""
    text = COMPOSE_FILE.read_text()
    names = set(re.findall(r"\bAGENTLOG_\w+", text))
    assert names, "docker-compose.yml sets no AGENTLOG_* variable"
    unknown = names - SETTINGS_VARIABLES
    assert not unknown, f"not fields of streams.settings.Settings: {sorted(unknown)}"
    otel = set(re.findall(r"\bOTEL_\w+", text))
    assert otel <= OTEL_VARIABLES, (
        f"not OpenTelemetry SDK variables: {sorted(otel - OTEL_VARIABLES)}"
    )
    # Exporting traces is opt-in, from the shell; each role names its own service.
    assert "OTEL_EXPORTER_OTLP_ENDPOINT: ${OTEL_EXPORTER_OTLP_ENDPOINT:-}" in text


def test_agentlog_services_get_settings_variables_only(compose_config: dict[str, Any]) -> None:
    environments = {
        name: _environment(svc) for name, svc in _agentlog_services(compose_config).items()
    }
    for name, env in environments.items():
        unknown = unknown_variables(env)
        assert not unknown, f"{name}: neither Settings fields nor OpenTelemetry's: {unknown}"
        assert env.get("AGENTLOG_KAFKA_BOOTSTRAP_SERVERS") == "kafka:9092", name
        # Deployed roles name their servers: never auto or embedded (local mode's).
        assert (env.get("AGENTLOG_DATABASE_URL") or "").startswith("postgresql://"), name
        assert (env.get("AGENTLOG_REDIS_URL") or "").startswith("redis://"), name
    first = next(iter(environments.values()))
    differing = sorted(name for name, env in environments.items() if env != first)
    assert not differing, f"services not sharing x-agentlog-env: {differing}"


def test_one_agentlog_service_per_role_command(compose_config: dict[str, Any]) -> None:
    entrypoints = re.findall(r"^ENTRYPOINT\s+(.+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert [json.loads(e) for e in entrypoints] == [["agentlog"]]
    services = _agentlog_services(compose_config)
    commands: list[tuple[str, ...]] = []
    for name, svc in services.items():
        assert "entrypoint" not in svc, f"{name} overrides the image's agentlog entrypoint"
        command = ("agentlog", *_command(svc))
        assert command in ROLE_COMMANDS, f"{name}: {shlex.join(command)} is not a role command"
        commands.append(command)
    assert sorted(commands) == sorted(ROLE_COMMANDS), "each role must run exactly once"


def test_roles_start_after_migrate_and_healthy_services(compose_config: dict[str, Any]) -> None:
    services = _agentlog_services(compose_config)
    by_command = _by_command(compose_config)
    migrate = by_command[MIGRATE]
    for name, svc in services.items():
        depends_on = svc.get("depends_on", {})
        conditions = {dep: spec["condition"] for dep, spec in depends_on.items()}
        for dep in ("kafka", "postgres"):
            assert conditions.get(dep) == "service_healthy", f"{name} must wait for {dep}"
        if name != migrate:
            assert conditions.get(migrate) == "service_completed_successfully", name
    gateway = services[by_command[GATEWAY]]
    published = {(str(p["published"]), str(p["target"])) for p in gateway.get("ports", [])}
    assert ("8080", "8080") in published, "the gateway must be published on 8080"


def test_roles_are_health_checked_on_their_own_port(compose_config: dict[str, Any]) -> None:
    """The gateway on its port, every worker role on the metrics port, migrate not at all."""
    services = _agentlog_services(compose_config)
    by_command = _by_command(compose_config)
    for command, name in by_command.items():
        env = _environment(services[name])
        check = " ".join(services[name].get("healthcheck", {}).get("test", []))
        if command == MIGRATE:
            assert check in ("", "NONE"), "migrate exits; it has no health to check"
            continue
        port = env["AGENTLOG_GATEWAY_PORT" if command == GATEWAY else "AGENTLOG_METRICS_PORT"]
        assert f"127.0.0.1:{port}/readyz" in check, f"{name} is not checked on :{port}/readyz"
        if command != GATEWAY:
            assert env.get("AGENTLOG_METRICS_HOST") == "0.0.0.0", f"{name}: unreachable metrics"


def test_prometheus_scrapes_every_role(compose_config: dict[str, Any]) -> None:
    """Every long-running agentlog service, on the port its /metrics is served on."""
    services = _agentlog_services(compose_config)
    expected = set()
    for command, name in _by_command(compose_config).items():
        if command == MIGRATE:
            continue
        env = _environment(services[name])
        port = env["AGENTLOG_GATEWAY_PORT" if command == GATEWAY else "AGENTLOG_METRICS_PORT"]
        expected.add((name, int(port or 0)))
    import yaml  # imported here: the other tests read docker-compose's output without it

    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "agentlog"]
    scraped = {(name, sd["port"]) for sd in job.get("dns_sd_configs", []) for name in sd["names"]}
    assert scraped == expected
    assert config["rule_files"] == ["alerts.yml"]


def test_monitoring_services(compose_config: dict[str, Any]) -> None:
    """Prometheus, Grafana and Jaeger: pinned images, only with the monitoring profile."""
    services = _services(compose_config)
    for name in MONITORING_SERVICES:
        service = services[name]
        assert service.get("profiles") == ["monitoring"], name
        assert re.search(r":v?\d+\.\d+\.\d+$", service["image"]), f"{name}: pin the image"

    def mounts(name: str) -> dict[str, str]:
        """Container path -> host path, for the bind mounts of a service."""
        volumes = services[name].get("volumes", [])
        if volumes and isinstance(volumes[0], dict):  # the long syntax (docker compose v2)
            return {v["target"]: v["source"] for v in volumes if v["type"] == "bind"}
        return {v.split(":")[1]: v.split(":")[0] for v in volumes if v.startswith("/")}

    assert mounts("prometheus")["/etc/prometheus"] == str(PROMETHEUS_CONFIG.parent)
    grafana = ROOT / "infra" / "grafana"
    assert mounts("grafana")["/etc/grafana/provisioning"] == str(grafana / "provisioning")
    assert mounts("grafana")["/etc/grafana/dashboards"] == str(grafana / "dashboards")
    jaeger_ports = {str(p["target"]) for p in services["jaeger"].get("ports", [])}
    assert {"4318", "16686"} <= jaeger_ports, "OTLP over HTTP and the UI"
