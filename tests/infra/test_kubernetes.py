"""The Kubernetes manifests (infra/k8s/), rendered by ``kubectl kustomize`` for the base and
each overlay, against the Kubernetes API schemas, Strimzi's API, the topic catalog and the
code's settings and roles.

Kubernetes resources are validated against the API's OpenAPI schemas (the
``kubernetes-validate`` package, strict: an unknown field fails). Strimzi's custom resources
are checked field by field against its ``kafka.strimzi.io/v1`` API reference, as no package
ships its CRD schemas. Needs ``kubectl``: without it the tests fail, unless
AGENTLOG_TEST_SKIP_KUBECTL=1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from streams.catalog import SPECS, Catalog
from streams.settings import Settings

from .environment import SETTINGS_VARIABLES, settings_default, unknown_variables
from .roles import GATEWAY, MIGRATE, ROLE_COMMANDS

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZATIONS = {
    "base": ROOT / "infra" / "k8s" / "base",
    "local": ROOT / "infra" / "k8s" / "overlays" / "local",
}
# The oldest Kubernetes that Strimzi 1.2 supports, and the newest with schemas here.
KUBERNETES_VERSIONS = ("1.30", latest_version())
STRIMZI_API = "kafka.strimzi.io/v1"
# Stateless roles: scaled by an autoscaler; the others keep a fixed replica count.
AUTOSCALED = {GATEWAY} | {
    ("agentlog", "worker", r) for r in ("commands", "orchestrator", "model", "tool")
}
# Settings that are secret (hidden from repr) or carry credentials: never in a ConfigMap.
SECRET_VARIABLES = {
    f"AGENTLOG_{name.upper()}" for name, field in Settings.model_fields.items() if not field.repr
} | {"AGENTLOG_DATABASE_URL", "AGENTLOG_REDIS_URL"}
PLACEHOLDER = "CHANGE-ME"

Resource = dict[str, Any]


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is not None:
        return path
    if os.environ.get("AGENTLOG_TEST_SKIP_KUBECTL") == "1":
        pytest.skip("kubectl is not installed (AGENTLOG_TEST_SKIP_KUBECTL=1)")
    pytest.fail(
        "kubectl is missing (its `kustomize` renders infra/k8s): install it, or set "
        "AGENTLOG_TEST_SKIP_KUBECTL=1 to skip",
        pytrace=False,
    )


@pytest.fixture(scope="module", params=sorted(KUSTOMIZATIONS))
def rendered(request: pytest.FixtureRequest) -> list[Resource]:
    """The resources a kustomization renders to, as ``kubectl apply -k`` would send them."""
    command = [_kubectl(), "kustomize", str(KUSTOMIZATIONS[request.param])]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _of_kind(resources: list[Resource], kind: str) -> list[Resource]:
    return [r for r in resources if r["kind"] == kind]


def _one(resources: list[Resource], kind: str) -> Resource:
    (resource,) = _of_kind(resources, kind)
    return resource


def _name(resource: Resource) -> str:
    return str(resource["metadata"]["name"])


def _settings(resources: list[Resource]) -> dict[str, str]:
    """What every agentlog container's environment gets: the ConfigMap, then the Secret."""
    (config,) = [c for c in _of_kind(resources, "ConfigMap") if _name(c).startswith("agentlog-")]
    secret = _one(resources, "Secret")
    return {**config.get("data", {}), **secret.get("stringData", {})}


def _setting(resources: list[Resource], variable: str) -> str:
    return _settings(resources).get(variable, str(settings_default(variable)))


def _agentlog_workloads(resources: list[Resource]) -> Iterator[Resource]:
    """The Deployments and the Job that run the agentlog image."""
    for resource in resources:
        labels = resource["metadata"].get("labels", {})
        if (
            resource["kind"] in ("Deployment", "Job")
            and labels.get("app.kubernetes.io/name") == "agentlog"
        ):
            yield resource


def _container(workload: Resource) -> Resource:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _command(workload: Resource) -> tuple[str, ...]:
    return ("agentlog", *_container(workload)["args"])


def _by_command(resources: list[Resource]) -> dict[tuple[str, ...], Resource]:
    return {_command(w): w for w in _agentlog_workloads(resources)}


def _quantity(value: str | int) -> float:
    """A CPU or memory quantity as a number (cores, bytes)."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match, f"not a quantity: {value}"
    return float(match[1]) * units.get(match[2], 1)


def test_resources_match_the_kubernetes_api(rendered: list[Resource]) -> None:
    errors = []
    for resource in rendered:
        if resource["apiVersion"].startswith("kafka.strimzi.io/"):
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{resource['kind']} {_name(resource)} ({version}): {exc}")
    assert not errors, "\n".join(errors)


def test_one_namespace(rendered: list[Resource]) -> None:
    namespace = _name(_one(rendered, "Namespace"))
    for resource in rendered:
        if resource["kind"] != "Namespace":
            assert resource["metadata"].get("namespace") == namespace, _name(resource)


def test_every_role_runs_once(rendered: list[Resource]) -> None:
    """One Deployment per long-running role and the migrations Job, all of one image."""
    by_kind: dict[str, list[tuple[str, ...]]] = {"Deployment": [], "Job": []}
    for workload in _agentlog_workloads(rendered):
        by_kind[workload["kind"]].append(_command(workload))
    assert by_kind["Job"] == [MIGRATE]
    assert sorted(by_kind["Deployment"]) == sorted(ROLE_COMMANDS - {MIGRATE})
    images = {_container(w)["image"] for w in _agentlog_workloads(rendered)}
    assert len(images) == 1, f"roles run different images: {sorted(images)}"
    assert not images.pop().endswith(":latest")


def test_settings_are_settings_fields(rendered: list[Resource]) -> None:
    """Every variable an agentlog container gets is read by agentlog or OpenTelemetry, has
    a valid value, and the secret ones come from the Secret."""
    (config,) = [c for c in _of_kind(rendered, "ConfigMap") if _name(c).startswith("agentlog-")]
    secret = _one(rendered, "Secret")
    names = set(config["data"]) | set(secret["stringData"])
    for workload in _agentlog_workloads(rendered):
        container = _container(workload)
        names |= {variable["name"] for variable in container.get("env", [])}
        sources = {
            source.get("configMapRef", source.get("secretRef", {})).get("name")
            for source in container["envFrom"]
        }
        assert sources == {_name(config), _name(secret)}, _name(workload)
    assert not unknown_variables(names)
    misplaced = SECRET_VARIABLES & set(config["data"])
    assert not misplaced, f"secret settings in the ConfigMap: {sorted(misplaced)}"
    settings = {
        name.removeprefix("AGENTLOG_").lower(): value
        for name, value in _settings(rendered).items()
        if name in SETTINGS_VARIABLES
    }
    Settings.model_validate(settings)  # valid values, e.g. numbers where numbers are due
    assert settings["secrets_key"], "every replica needs the same key: a file would differ"


def test_base_secret_holds_placeholders_only() -> None:
    secret = yaml.safe_load((KUSTOMIZATIONS["base"] / "secret.yaml").read_text())
    for name, value in secret["stringData"].items():
        assert value == "" or PLACEHOLDER in value, f"{name}: a real value in the base"


def test_probes_and_metrics_ports(rendered: list[Resource]) -> None:
    """The gateway on its port, worker roles on the metrics port, each listening on every
    address and announced to Prometheus."""
    assert _setting(rendered, "AGENTLOG_GATEWAY_HOST") == "0.0.0.0"
    assert _setting(rendered, "AGENTLOG_METRICS_HOST") == "0.0.0.0"
    for command, workload in _by_command(rendered).items():
        container = _container(workload)
        if command == MIGRATE:
            assert "ports" not in container
            assert "readinessProbe" not in container
            continue
        variable = "AGENTLOG_GATEWAY_PORT" if command == GATEWAY else "AGENTLOG_METRICS_PORT"
        port = int(_setting(rendered, variable))
        (named,) = container["ports"]
        assert named["containerPort"] == port, f"{_name(workload)} listens on {port}"
        for probe, path in (
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ):
            check = container[probe]["httpGet"]
            assert (check["path"], check["port"]) == (path, named["name"]), (_name(workload), probe)
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port), _name(workload)
        assert annotations["prometheus.io/path"] == "/metrics"
    gateway = _by_command(rendered)[GATEWAY]
    (service,) = [s for s in _of_kind(rendered, "Service") if _name(s) == _name(gateway)]
    assert [port["targetPort"] for port in service["spec"]["ports"]] == ["http"]
    pod_labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_autoscalers_stop_at_the_partition_count(rendered: list[Resource]) -> None:
    """A consumer group gives each partition to one member: more replicas would idle."""
    partitions = int(_setting(rendered, "AGENTLOG_TOPIC_PARTITIONS"))
    by_command = _by_command(rendered)
    autoscalers = {
        a["spec"]["scaleTargetRef"]["name"]: a
        for a in _of_kind(rendered, "HorizontalPodAutoscaler")
    }
    scaled = {command for command, workload in by_command.items() if _name(workload) in autoscalers}
    assert scaled == AUTOSCALED
    for command, workload in by_command.items():
        if command == MIGRATE:
            continue
        if command not in AUTOSCALED:
            assert workload["spec"]["replicas"] >= 1, _name(workload)
            continue
        assert "replicas" not in workload["spec"], f"{_name(workload)}: the autoscaler's to set"
        spec = autoscalers[_name(workload)]["spec"]
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
        if command != GATEWAY:
            assert spec["maxReplicas"] == partitions, _name(workload)


def test_every_role_has_a_disruption_budget(rendered: list[Resource]) -> None:
    budgets = _of_kind(rendered, "PodDisruptionBudget")
    for workload in _agentlog_workloads(rendered):
        if workload["kind"] != "Deployment":
            continue
        labels = workload["spec"]["template"]["metadata"]["labels"]
        matching = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(matching) == 1, f"{_name(workload)} has {len(matching)} budgets"
        # maxUnavailable: a one-replica role can still be drained off a node.
        assert matching[0]["spec"]["maxUnavailable"] == 1, _name(workload)


def test_pods_meet_the_restricted_pod_security_standard(rendered: list[Resource]) -> None:
    for workload in rendered:
        if workload["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        pod = workload["spec"]["template"]["spec"]
        name = _name(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod.get("automountServiceAccountToken") is False, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            resources = container["resources"]
            assert _quantity(resources["requests"]["memory"]) <= _quantity(
                resources["limits"]["memory"]
            )
            assert "cpu" in resources["requests"], name
    for workload in _agentlog_workloads(rendered):
        container = _container(workload)
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        limits = container["resources"]["limits"]
        assert _quantity(container["resources"]["requests"]["cpu"]) <= _quantity(limits["cpu"])


def test_roles_shut_down_before_they_are_killed(rendered: list[Resource]) -> None:
    shutdown = float(_setting(rendered, "AGENTLOG_SHUTDOWN_TIMEOUT_S"))
    for command, workload in _by_command(rendered).items():
        if command == MIGRATE:
            continue
        pod = workload["spec"]["template"]["spec"]
        pre_stop = _container(workload).get("lifecycle", {}).get("preStop", {})
        delay = pre_stop.get("sleep", {}).get("seconds", 0)
        assert pod["terminationGracePeriodSeconds"] > delay + shutdown, _name(workload)


def test_strimzi_resources(rendered: list[Resource]) -> None:
    """Against Strimzi's v1 API reference: what the Cluster Operator requires, and a cluster
    that agentlog's settings point at and that can take its writes."""
    for resource in rendered:
        if resource["apiVersion"].startswith("kafka.strimzi.io/"):
            assert resource["apiVersion"] == STRIMZI_API, _name(resource)
    kafka = _one(rendered, "Kafka")
    cluster = _name(kafka)
    spec = kafka["spec"]["kafka"]
    assert re.fullmatch(r"4\.\d+\.\d+", spec["version"])
    major_minor = spec["version"].rsplit(".", 1)[0]
    assert re.fullmatch(rf"{re.escape(major_minor)}-IV\d+", spec["metadataVersion"])
    assert not {"replicas", "storage", "resources"} & spec.keys(), "node pools hold these in v1"
    assert "zookeeper" not in kafka["spec"]
    assert isinstance(kafka["spec"]["entityOperator"]["topicOperator"], dict)
    (plain,) = [listener for listener in spec["listeners"] if listener["tls"] is False]
    assert plain["type"] == "internal"
    bootstrap = f"{cluster}-kafka-bootstrap:{plain['port']}"
    assert _setting(rendered, "AGENTLOG_KAFKA_BOOTSTRAP_SERVERS") == bootstrap

    pools = _of_kind(rendered, "KafkaNodePool")
    brokers = 0
    roles: set[str] = set()
    for pool in pools:
        assert pool["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert pool["spec"]["replicas"] >= 1
        assert set(pool["spec"]["roles"]) <= {"controller", "broker"}
        roles |= set(pool["spec"]["roles"])
        brokers += pool["spec"]["replicas"] if "broker" in pool["spec"]["roles"] else 0
        storage = pool["spec"]["storage"]
        assert storage["type"] in ("jbod", "persistent-claim", "ephemeral")
        if storage["type"] == "jbod":
            metadata = [v for v in storage["volumes"] if v.get("kraftMetadata") == "shared"]
            assert len(metadata) == 1, "one volume holds the KRaft metadata log"
    assert roles == {"controller", "broker"}, "KRaft needs controllers and brokers"

    config = spec["config"]
    min_insync = int(config["min.insync.replicas"])
    for key in ("default.replication.factor", "offsets.topic.replication.factor"):
        assert min_insync <= int(config[key]) <= brokers, key
    assert config["auto.create.topics.enable"] is False
    for topic in _of_kind(rendered, "KafkaTopic"):
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert min_insync <= topic["spec"]["replicas"] <= brokers, _name(topic)


def test_topics_are_the_catalog(rendered: list[Resource]) -> None:
    """Names, partitions and configs exactly as streams.catalog defines them."""
    catalog = Catalog(_setting(rendered, "AGENTLOG_TOPIC_PREFIX"))
    partitions = int(_setting(rendered, "AGENTLOG_TOPIC_PARTITIONS"))
    topics = {_name(t): t["spec"] for t in _of_kind(rendered, "KafkaTopic")}
    assert sorted(topics) == sorted(catalog.name(spec) for spec in SPECS)
    for spec in SPECS:
        topic = topics[catalog.name(spec)]
        assert topic.get("topicName", catalog.name(spec)) == catalog.name(spec)
        assert topic["partitions"] == partitions, spec.name
        configs = {key: str(value) for key, value in topic.get("config", {}).items()}
        assert configs == spec.configs, spec.name


def test_compose_runs_the_same_kafka() -> None:
    """docker-compose.yml's broker and the Strimzi cluster run one Kafka version."""
    compose = (ROOT / "docker-compose.yml").read_text()
    (image_version,) = re.findall(r"image: apache/kafka:(\S+)", compose)
    resources = yaml.safe_load_all((KUSTOMIZATIONS["base"] / "kafka" / "kafka.yaml").read_text())
    (kafka,) = [r for r in resources if r["kind"] == "Kafka"]
    assert kafka["spec"]["kafka"]["version"] == image_version
