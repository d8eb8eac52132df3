"""``backfill_flow``: rebuild the index as a new version and switch the alias to it, with no downtime.

The new version ``<alias>_v<N+1>`` is built from every source by the same stages as an ingest,
checked (ledger and index agree, a smoke query answers, no mass loss of sources), and only then
made live by one alias update. Consumers query the alias throughout and never see a half-built
or mixed index. This is also how the parser, chunker or embedding model changes.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

from prefect import flow, task

from flows.ingest import RETRYABLE, IngestReport, refresh_source, source_roots
from flows.report import ingest_markdown, publish
from infra.ray.runtime import RayOnDemand
from infra.weaviate.connection import WeaviateEndpoint, weaviate_client, weaviate_endpoint
from infra.weaviate.lease import write_lease
from schemas.collection import (
    drop_version,
    ensure_collection,
    resolve_target,
    switch_alias,
    version_name,
    versions,
)
from schemas.config import HeadwaterConfig, load_config
from tasks import check_stage_chain
from tasks.ledger import ledger_facts, ledger_size
from tasks.verify import audit_index


class BackfillRejected(RuntimeError):
    """The new version failed its checks; the alias still names the old one."""


@dataclass
class BackfillReport:
    alias: str
    previous: str | None
    target: str
    build: IngestReport
    checks: dict[str, Any] = field(default_factory=dict)
    switched: bool = False
    dropped: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0


@task(name="prepare-version", **RETRYABLE)
def prepare_task(sources: list[str] | None, config: HeadwaterConfig,
                 endpoint: WeaviateEndpoint) -> tuple[str | None, str, list[str]]:
    """The version live now, a new empty version, and the sources to build it from."""
    alias = config.index.collection
    with weaviate_client(endpoint) as client:
        previous = resolve_target(client, alias)
        roots = list(sources or config.index.sources)
        if not roots and previous is not None:
            roots = [unquote(urlparse(uri).path) for uri in ledger_facts(client, previous)[0]]
        if not roots:
            raise ValueError(f"backfill {alias}: no sources: pass folders, set index.sources, or ingest once first")
        source_roots(roots)  # every source must exist before anything is built
        target = version_name(alias, max(versions(client, alias), default=0) + 1)
        ensure_collection(client, target, config.collection)
    return previous, target, roots


@task(name="check-version", **RETRYABLE)
def check_task(target: str, previous: str | None, config: HeadwaterConfig,
               endpoint: WeaviateEndpoint) -> dict[str, Any]:
    """Refuse to switch to a version that is inconsistent, empty, unanswerable or much smaller.

    Raises:
        BackfillRejected: with the failed check.
    """
    from weaviate.classes.query import MetadataQuery

    with weaviate_client(endpoint) as client:
        audit = audit_index(client, target)
        checks: dict[str, Any] = {"objects": audit.index_objects, "sources": audit.ledger_sources,
                                  "audit_clean": audit.clean}
        if not audit.clean or audit.index_objects == 0:
            raise BackfillRejected(f"{target}: ledger and index disagree or the index is empty: {audit.rows()}")
        coll = client.collections.use(target)
        sample = coll.query.fetch_objects(limit=1, include_vector=True, return_properties=["text"]).objects[0]
        words = " ".join(str(sample.properties["text"]).split()[:12])
        vector = sample.vector["default"]
        checks["smoke_bm25_hits"] = len(coll.query.bm25(words, limit=3).objects)
        near = coll.query.near_vector(vector, limit=1, return_metadata=MetadataQuery(distance=True)).objects
        checks["smoke_vector_self_hit"] = bool(near) and near[0].uuid == sample.uuid
        if not checks["smoke_bm25_hits"] or not checks["smoke_vector_self_hit"]:
            raise BackfillRejected(f"{target}: smoke queries failed: {checks}")
        if previous is not None:
            before = ledger_size(client, previous)
            checks["previous_sources"] = before
            floor = before * (1 - config.index.max_delete_fraction)
            if audit.ledger_sources < floor:
                raise BackfillRejected(
                    f"{target} holds {audit.ledger_sources} sources, {previous} {before}: more than "
                    f"index.max_delete_fraction={config.index.max_delete_fraction} would vanish")
    return checks


@task(name="switch-alias", **RETRYABLE)
def switch_task(target: str, previous: str | None, config: HeadwaterConfig, endpoint: WeaviateEndpoint) -> list[str]:
    """Point the alias at ``target`` in one call, then drop versions beyond ``index.keep_versions``."""
    alias = config.index.collection
    with weaviate_client(endpoint) as client:
        switch_alias(client, alias, target)
        older = [name for _, name in sorted(versions(client, alias).items(), reverse=True) if name != target]
        keep = ([previous] if previous in older else []) + [n for n in older if n != previous]
        dropped = keep[config.index.keep_versions:]
        for name in dropped:
            drop_version(client, name)
    return dropped


@flow(name="backfill", log_prints=True)
def backfill_flow(sources: list[str] | None = None, config: HeadwaterConfig | None = None) -> BackfillReport:
    """Rebuild the index from all its sources as a new version, check it, and switch the alias to it.

    Args:
        sources: Folders to build from; default ``index.sources``, else the folders the live
            version was ingested from.
        config: The configuration of the new version (a new chunker or model goes here).

    Raises:
        BackfillRejected: the new version failed a check; it is dropped, the alias is unchanged.
        WriteLeaseHeld: another run is writing this index.
    """
    config = config or load_config()
    started = time.perf_counter()
    check_stage_chain()
    idx = config.index
    with weaviate_endpoint(config.weaviate) as endpoint, \
            write_lease(endpoint, idx.collection, "backfill", idx.lease_wait_s, idx.lease_ttl_s, config.collection):
        previous, target, roots = prepare_task(sources, config, endpoint)
        build = IngestReport(sources=roots, collection=idx.collection, target=target)
        report = BackfillReport(idx.collection, previous, target, build)
        try:
            with RayOnDemand(config.ray) as ray_runtime:
                for root in source_roots(roots):
                    refresh_source(root, config.bound_to(target), endpoint, ray_runtime, build)
            report.checks = check_task(target, previous, config, endpoint)
        except BaseException:
            with weaviate_client(endpoint) as client:  # the alias never named it: nobody loses anything
                drop_version(client, target)
            raise
        report.dropped = switch_task(target, previous, config, endpoint)
        report.switched = True
    report.wall_seconds = build.wall_seconds = time.perf_counter() - started
    data = dataclasses.asdict(report)
    publish("backfill", idx.collection, data, backfill_markdown(report, config), config)
    return report


def backfill_markdown(report: BackfillReport, config: HeadwaterConfig) -> str:
    head = [f"# Headwater backfill: `{report.alias}` now names `{report.target}`", "",
            f"Previous version: `{report.previous or '(none)'}`; dropped: "
            f"{', '.join(f'`{d}`' for d in report.dropped) or 'none'}.", "",
            "| check | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in report.checks.items()], ""]
    body = ingest_markdown("backfill build", report.build, config).split("\n", 1)[1]
    return "\n".join(head) + body
