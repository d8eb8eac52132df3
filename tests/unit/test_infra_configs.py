"""The deployment files under infra/, checked offline against the schemas their tools use: Ray's cluster
config schema (shipped with ray), the KubeRay RayCluster CRD schema and the Compose specification (both
vendored under tests/schemas/), and the Weaviate chart's values (helm template when helm and the chart are
at hand)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
COMPOSE_FILES = ["infra/docker-compose.yml", "infra/weaviate/docker-compose.cluster.yml"]


def _yaml(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())


def _validate(doc: dict, schema_path: Path) -> None:
    schema = json.loads(schema_path.read_text())
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])


def test_ray_up_config_matches_rays_schema() -> None:
    import ray.autoscaler

    config = _yaml("infra/ray/cluster.yaml")
    _validate(config, Path(ray.autoscaler.__file__).parent / "ray-schema.json")
    assert any("--head" in c for c in config["head_start_ray_commands"])
    assert all("RAY_USAGE_STATS_ENABLED=0" in c for c in config["head_start_ray_commands"] if "ray start" in c)


def test_kuberay_cluster_matches_the_crd_schema() -> None:
    cluster = _yaml("infra/ray/raycluster.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    _validate(cluster, SCHEMAS / "raycluster-v1.json")
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1" and groups["gpu"]["minReplicas"] == 0  # scales from zero
    import ray

    assert spec["rayVersion"] == ray.__version__, "the cluster must run the driver's Ray version"


@pytest.mark.parametrize("path", COMPOSE_FILES)
def test_compose_files_match_the_compose_spec(path: str) -> None:
    _validate(_yaml(path), SCHEMAS / "compose-spec.json")


def test_weaviate_compose_cluster_is_three_raft_voters() -> None:
    services = _yaml("infra/weaviate/docker-compose.cluster.yml")["services"]
    envs = {name: svc["environment"] for name, svc in services.items()}
    assert sorted(e["CLUSTER_HOSTNAME"] for e in envs.values()) == ["node1", "node2", "node3"]
    assert all(e["RAFT_BOOTSTRAP_EXPECT"] == "3" and e["RAFT_JOIN"] == "node1,node2,node3" for e in envs.values())
    assert all(e["DISABLE_TELEMETRY"] == "true" and "GOMEMLIMIT" in e for e in envs.values())
    assert len({tuple(svc["ports"]) for svc in services.values()}) == 3


def test_local_stack_wires_headwater_to_its_services() -> None:
    services = _yaml("infra/docker-compose.yml")["services"]
    assert {"weaviate", "prefect-server", "ray-head", "ray-worker", "headwater-worker"} <= set(services)
    worker = services["headwater-worker"]["environment"]
    assert worker["RAY_ADDRESS"] == "ray-head:6379" and worker["HEADWATER_WEAVIATE_URL"] == "http://weaviate:8080"
    assert "headwater-process" in services["headwater-worker"]["command"]  # the pool prefect.yaml targets


# Top-level keys of the weaviate/weaviate chart's values.yaml that these values set.
CHART_KEYS = {"image", "replicas", "updateStrategy", "resources", "storage", "service", "grpcService",
              "authentication", "authorization", "query_defaults", "env", "envSecrets", "backups"}


def _bytes(quantity: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    for unit, factor in sorted(units.items(), key=lambda u: -len(u[0])):
        if quantity.endswith(unit):
            return float(quantity[: -len(unit)]) * factor
    return float(quantity)


def test_helm_values_are_a_replicated_cluster() -> None:
    values = _yaml("infra/weaviate/helm-values.yaml")
    assert set(values) <= CHART_KEYS, set(values) - CHART_KEYS
    from schemas.config import WEAVIATE_VERSION

    assert values["image"]["tag"] == WEAVIATE_VERSION.removeprefix("v")
    assert values["env"]["RAFT_BOOTSTRAP_EXPECT"] == values["replicas"] == 3
    assert _bytes(values["env"]["GOMEMLIMIT"]) < _bytes(values["resources"]["limits"]["memory"])
    assert values["authentication"]["anonymous_access"]["enabled"] is False
    assert "AUTHENTICATION_APIKEY_ALLOWED_KEYS" in values["envSecrets"], "keys come from a Secret"
    assert "AUTHENTICATION_APIKEY_ALLOWED_KEYS" not in values["env"]


def test_helm_template_renders_the_values(tmp_path: Path) -> None:
    helm = shutil.which("helm")
    chart = os.environ.get("HEADWATER_WEAVIATE_CHART")  # a local copy of weaviate/weaviate-helm's chart
    if not helm or not chart:
        pytest.skip("helm template needs `helm` on PATH and HEADWATER_WEAVIATE_CHART (no network here); "
                    "the values are checked against the chart's keys above")
    out = subprocess.run([helm, "template", "weaviate", chart, "-f", str(ROOT / "infra/weaviate/helm-values.yaml")],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    assert sts["spec"]["replicas"] == 3
