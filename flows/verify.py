"""``verify_flow``: audit the live index against its ledger, as a schedulable Prefect flow."""

from __future__ import annotations

import dataclasses

from prefect import flow, task

from flows.ingest import RETRYABLE
from flows.report import publish, weaviate_location
from infra.weaviate.connection import WeaviateEndpoint, weaviate_client, weaviate_endpoint
from schemas.collection import resolve_target
from schemas.config import HeadwaterConfig, load_config
from tasks.verify import Audit, Verification, verify_index


class IndexNotClean(RuntimeError):
    """The audit found problems (after a repair, if one was asked for)."""


@task(name="audit-index", **RETRYABLE)
def audit_task(config: HeadwaterConfig, endpoint: WeaviateEndpoint, repair: bool) -> tuple[str, Verification]:
    alias = config.index.collection
    with weaviate_client(endpoint) as client:
        target = resolve_target(client, alias)
        if target is None:
            raise IndexNotClean(f"no index {alias!r}: run `headwater ingest` first")
        return target, verify_index(client, target, repair)


@flow(name="verify", log_prints=True)
def verify_flow(config: HeadwaterConfig | None = None, repair: bool = False) -> Audit:
    """Audit the index the alias names; publish the audit; fail the run when it is not clean.

    Raises:
        IndexNotClean: problems found (and, with ``repair``, still there after repairing).
    """
    config = config or load_config()
    alias = config.index.collection
    with weaviate_endpoint(config.weaviate) as endpoint:
        target, result = audit_task(config, endpoint, repair)
    audit, repaired, final = result.before, result.after, result.final
    lines = [f"# Headwater verify: `{alias}` → `{target}`: {'clean' if final.clean else 'PROBLEMS FOUND'}", "",
             "| check | count | status |", "|---|---:|---|"]
    lines += [f"| {check} | {count} | {status} |" for check, count, status in audit.rows()]
    if repaired is not None:
        lines += ["", "After repair:", "", "| check | count | status |", "|---|---:|---|"]
        lines += [f"| {check} | {count} | {status} |" for check, count, status in repaired.rows()]
    lines += ["", f"Weaviate: {weaviate_location(config)}"]
    data = {"target": target, "audit": dataclasses.asdict(audit), "clean": final.clean,
            "repaired": dataclasses.asdict(repaired) if repaired else None}
    publish("verify", alias, data, "\n".join(lines), config)
    if not final.clean:
        raise IndexNotClean(f"index {alias} ({target}) is not clean: {final.rows()}")
    return final
