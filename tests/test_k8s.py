"""The Kubernetes path, checked as far as a machine without a cluster can check it.

- Every manifest this repository writes (infra/k8s/*.yaml) is validated against the schemas of
  the pinned Kubernetes version with kubernetes-validate, strictly (an unknown or misspelt field
  is an error, not a silently ignored key).
- The Helm values for Dagster's chart are not a manifest (the chart renders them, and neither Helm
  nor the chart is available here): they are checked for the keys the chart's templates read and
  for agreeing with the Docker profile that the system test runs (launcher, limits, retries,
  compute logs, images).
Nothing here was installed on a cluster; README says so.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "infra" / "k8s"
HELM_VALUES = ROOT / "infra" / "production" / "dagster-k8s-values.yaml"
PRODUCTION_YAML = ROOT / "infra" / "production" / "dagster.yaml"
# The Kubernetes version the manifests are written for (README: "Kubernetes").
KUBERNETES_VERSION = "1.31.0"


def _documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


def _manifest(kind: str, name: str) -> dict:
    (doc,) = [d for _, d in _documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_there_are_manifests_to_validate():
    kinds = {doc["kind"] for _, doc in _documents()}
    assert {"Deployment", "Service", "StatefulSet", "NetworkPolicy"} <= kinds


@pytest.mark.parametrize("name,doc", _documents(), ids=[name for name, _ in _documents()])
def test_manifest_validates_strictly_against_the_pinned_kubernetes(name, doc):
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{name}: {error.message} at {'.'.join(map(str, error.path))}")


def test_a_misspelt_field_would_be_caught():
    """The validation is strict for real: a typo in a probe is an error."""
    import kubernetes_validate

    deployment = _manifest("Deployment", "fraudloop-scoring")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_scoring_deployment_probes_and_service_wiring():
    deployment = _manifest("Deployment", "fraudloop-scoring")
    service = _manifest("Service", "fraudloop-scoring")
    config_map = _manifest("ConfigMap", "fraudloop-scoring")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port = container["ports"][0]
    assert port["containerPort"] == 8000 and container["readinessProbe"]["httpGet"]["port"] in (
        port["name"],
        port["containerPort"],
    )
    # the args are the image entry point's (python -m fraudloop.serving): they parse, and the
    # service listens on every interface at the port the probes and the Service use
    from fraudloop.serving.__main__ import build_parser

    args = build_parser().parse_args(container["args"])
    assert (args.host, args.port) == ("0.0.0.0", port["containerPort"])
    # the Service selects exactly the Deployment's pods, on the container's port
    labels = pod["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    assert service["spec"]["ports"][0]["targetPort"] in (port["name"], port["containerPort"])
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # never more than one replica down during a rollout; no root, no writable image
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # configuration comes from a ConfigMap and a Secret, never literal secrets
    env_names = {e.get("name") for e in container.get("env", [])}
    assert not {n for n in env_names if n and ("SECRET" in n or "TOKEN" in n)}
    refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
    assert {config_map["metadata"]["name"]} <= refs


def test_scoring_replicas_share_one_redis(monkeypatch):
    """More than one replica needs the shared online store: the ConfigMap selects Redis, the
    URL (with its password) comes from the secret, and the documented in-cluster URL names the
    Redis Service, which only the scoring pods may reach."""
    from fraudloop.serving.config import ServeConfig

    deployment = _manifest("Deployment", "fraudloop-scoring")
    config_map = _manifest("ConfigMap", "fraudloop-scoring")["data"]
    assert deployment["spec"]["replicas"] > 1
    assert config_map["FRAUDLOOP_ONLINE_STORE"] == "redis"
    assert "FRAUDLOOP_REDIS_URL" not in config_map  # a password: in the secret only
    scoring_text = (K8S / "scoring.yaml").read_text()
    url = "redis://:<password>@fraudloop-redis:6379/0"
    assert f"FRAUDLOOP_REDIS_URL={url}" in scoring_text
    # the service reads the ConfigMap and that URL as a valid configuration
    for name, value in {**config_map, "FRAUDLOOP_REDIS_URL": url}.items():
        monkeypatch.setenv(name, value)
    config = ServeConfig.from_env()
    assert (config.online_store, config.redis_url) == ("redis", url)
    # the Redis the URL names: a Service on 6379 selecting the StatefulSet's pods
    service = _manifest("Service", "fraudloop-redis")
    redis = _manifest("StatefulSet", "fraudloop-redis")
    pod = redis["spec"]["template"]
    assert service["spec"]["ports"][0]["port"] == 6379
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    args = container["args"]
    flags = dict(zip(args[1::2], args[2::2], strict=True))
    assert flags["--port"] == "6379" and flags["--maxmemory-policy"] == "noeviction"
    assert (flags["--appendonly"], flags["--appendfsync"]) == ("yes", "everysec")
    assert flags["--dir"] == container["volumeMounts"][0]["mountPath"]
    password = {e["name"]: e for e in container["env"]}["REDIS_PASSWORD"]
    assert flags["--requirepass"] == "$(REDIS_PASSWORD)" and "secretKeyRef" in password["valueFrom"]
    # only the scoring pods reach Redis
    policy = _manifest("NetworkPolicy", "fraudloop-redis")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (rule,) = policy["spec"]["ingress"]
    (source,) = rule["from"]
    scoring_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert source["podSelector"]["matchLabels"].items() <= scoring_labels.items()


def test_helm_values_match_the_docker_profile():
    values = yaml.safe_load(HELM_VALUES.read_text())
    production = yaml.safe_load(PRODUCTION_YAML.read_text())
    assert "not exercised" in HELM_VALUES.read_text().lower()
    # K8sRunLauncher: dagster-k8s is a dependency and in the code image
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"dagster-k8s>=0.29,<0.30"' in pyproject
    dockerfile = (ROOT / "infra" / "docker" / "Dockerfile.dagster").read_text()
    assert "dagster_k8s" in dockerfile  # the code image proves it imports
    # pools and run limits under the chart's `concurrency` (not in the run coordinator too:
    # the chart refuses both), the same as the Docker profile's
    concurrency = values["concurrency"]
    assert (
        concurrency["pools"]["defaultLimit"] == production["concurrency"]["pools"]["default_limit"]
    )
    assert {"key": "fraudloop/retrain", "limit": 1} in concurrency["runs"]["tagConcurrencyLimits"]
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert "maxConcurrentRuns" not in queued and "tagConcurrencyLimits" not in queued
    # run retries and run monitoring on, as in the Docker profile
    daemon = values["dagsterDaemon"]
    assert daemon["runRetries"]["enabled"] and daemon["runRetries"]["maxRetries"] >= 1
    assert daemon["runMonitoring"]["enabled"]
    # step logs to S3, as the Docker profile's compute-log manager
    logs = values["computeLogManager"]
    assert logs["type"] == "S3ComputeLogManager"
    assert (
        logs["config"]["s3ComputeLogManager"]["prefix"]
        == production["compute_logs"]["config"]["prefix"]
    )
    # the user code: the code image, its module, S3 store
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["codeServerArgs"][-1] == "pipelines.definitions"
    env = {e["name"]: e.get("value") for e in deployment["env"]}
    assert env["FRAUDLOOP_STORE"] == "s3"
    assert values["postgresql"]["enabled"] is False
    assert values["telemetry"]["enabled"] is False
