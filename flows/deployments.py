"""The deployments of one index: scheduled ingest, manual backfill, scheduled verify.

``headwater serve`` serves them from one long-lived process (``prefect.serve``); ``prefect.yaml``
declares the same three for work pools (``prefect deploy --all``). Deployment names are the
index (alias) name, so one Prefect server can run several indexes side by side. A run loads the
config from the environment it runs in (``HEADWATER_*``, ``HEADWATER_CONFIG``), the one place config
comes from; secrets therefore never travel as flow-run parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from schemas.config import HeadwaterConfig

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment


def deployment_name(config: HeadwaterConfig) -> str:
    return config.index.collection.lower()


def build_deployments(config: HeadwaterConfig) -> list[RunnerDeployment]:
    """Ingest on ``runs.ingest_cron`` (a run due while one runs is cancelled: the next catches up),
    backfill on demand (queued one at a time), verify on ``runs.verify_cron``, and the relevance-drift
    check on ``runs.drift_cron`` when a golden set is configured."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron

    from flows.backfill import backfill_flow
    from flows.drift import drift_flow
    from flows.ingest import ingest_flow
    from flows.verify import verify_flow

    name, alias, tz = deployment_name(config), config.index.collection, config.runs.timezone
    tags = ["headwater", f"index:{alias}"]
    one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
    queued = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    deployments = [
        ingest_flow.to_deployment(
            name=name, schedule=Cron(config.runs.ingest_cron, timezone=tz), concurrency_limit=one_at_a_time,
            tags=tags, description=f"Incremental refresh of index {alias} from index.sources.",
        ),
        backfill_flow.to_deployment(
            name=name, concurrency_limit=queued, tags=tags,
            description=f"Rebuild index {alias} as a new version and switch its alias (manual runs).",
        ),
        verify_flow.to_deployment(
            name=name, schedule=Cron(config.runs.verify_cron, timezone=tz) if config.runs.verify_cron else None,
            tags=tags, description=f"Audit index {alias} against its ledger; fails when not clean.",
        ),
    ]
    if config.runs.golden_set is not None:
        deployments.append(drift_flow.to_deployment(
            name=name, schedule=Cron(config.runs.drift_cron, timezone=tz), tags=tags,
            description=f"Re-run the golden queries on {alias}; fails when nDCG@10 drops below its baseline.",
        ))
    return deployments


def serve_deployments(config: HeadwaterConfig) -> None:  # pragma: no cover - blocks until interrupted
    from prefect import serve

    serve(*build_deployments(config))
