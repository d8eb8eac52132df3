"""The deployment definitions: what `headwater serve` builds, prefect.yaml and the work-pool templates,
checked with Prefect's own models (no server needed)."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
import yaml

from flows.deployments import build_deployments
from schemas.config import HeadwaterConfig

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_serve_builds_ingest_backfill_and_verify_for_the_index() -> None:
    config = HeadwaterConfig(index={"collection": "Docs"}, runs={"ingest_cron": "*/5 * * * *", "verify_cron": None})
    ingest, backfill, verify = build_deployments(config)
    assert {d.name for d in (ingest, backfill, verify)} == {"docs"}
    assert [d.flow_name for d in (ingest, backfill, verify)] == ["ingest", "backfill", "verify"]
    assert [s.schedule.cron for s in ingest.schedules] == ["*/5 * * * *"]  # type: ignore[union-attr]
    assert ingest.concurrency_limit == 1 and ingest.concurrency_options.collision_strategy.value == "CANCEL_NEW"  # type: ignore[union-attr]
    assert backfill.schedules == [] and backfill.concurrency_options.collision_strategy.value == "ENQUEUE"  # type: ignore[union-attr]
    assert verify.schedules == []  # verify_cron unset: manual only
    assert "index:Docs" in ingest.tags


def test_prefect_yaml_is_valid_and_its_entrypoints_are_the_flows() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.flows import Flow

    raw = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    model = PrefectYamlModel.model_validate(raw)
    pools = {"headwater-process": "process-work-pool.json", "headwater-kubernetes": "kubernetes-work-pool.json"}
    seen = set()
    for dep in model.deployments:
        module, name = dep.entrypoint.split(":")  # type: ignore[union-attr]
        flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)
        assert isinstance(flow, Flow)
        seen.add((flow.name, dep.name))
        assert dep.work_pool is not None and dep.work_pool.name in pools  # type: ignore[union-attr]
        limit = (raw["deployments"][model.deployments.index(dep)].get("concurrency_limit") or {})
        if flow.name in {"ingest", "backfill"}:
            assert limit.get("limit") == 1, f"{flow.name}/{dep.name} must run one at a time"
    assert {("ingest", "headwater"), ("backfill", "headwater"), ("verify", "headwater")} <= seen
    active = [d for d in raw["deployments"] if d["entrypoint"].startswith("flows/ingest.py")
              and any(s.get("active", True) for s in d.get("schedules", []))]
    assert len(active) == 1, "exactly one active ingest schedule, or two pools would race for it"


@pytest.mark.parametrize("name", ["process-work-pool.json", "kubernetes-work-pool.json"])
def test_work_pool_templates_use_only_declared_variables(name: str) -> None:
    import jsonschema

    template = json.loads((ROOT / "infra" / "prefect" / name).read_text())
    variables = template["variables"]
    jsonschema.Draft202012Validator.check_schema(variables)
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", json.dumps(template["job_configuration"])))
    assert used <= set(variables["properties"]), used - set(variables["properties"])
    env_default = variables["properties"]["env"]["default"]
    assert env_default["DO_NOT_TRACK"] == "true" and env_default["RAY_USAGE_STATS_ENABLED"] == "0"
    assert not any("KEY" in k for k in env_default), "secrets come from a secret store, not the template"
