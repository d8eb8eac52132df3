"""``drift_flow``: re-run a golden query set against the live alias; fail when relevance drops.

A golden set is a JSON file: queries, graded judgements by document (a source file name), the
search settings to use, and the recorded nDCG@10 baseline. The flow publishes an artifact with
the current figure, the baseline and the queries that lost the most, and fails when nDCG@10
falls more than ``runs.drift_margin`` below the baseline. ``record=True`` (re)records the baseline.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from prefect import flow

from flows.evaluate import doc_key, run_queries
from flows.report import publish, weaviate_location
from infra.weaviate.connection import weaviate_client, weaviate_endpoint
from schemas.config import HeadwaterConfig, load_config
from tasks.embed import Embedder
from tasks.evaluate import score_run


class RelevanceDrift(RuntimeError):
    """nDCG@10 of the golden queries fell below the baseline by more than the margin."""


def golden_set(queries: dict[str, str], qrels: dict[str, dict[str, int]], config: HeadwaterConfig,
               baseline: float | None = None) -> dict[str, Any]:
    """A golden set with the config's query settings (document keys are source file names)."""
    q = config.query
    return {"collection": config.index.collection, "mode": q.mode, "alpha": q.alpha, "fusion": q.fusion,
            "properties": list(q.properties), "queries": queries, "qrels": qrels, "baseline_ndcg@10": baseline,
            "recorded_at": dt.datetime.now(dt.UTC).isoformat() if baseline is not None else None}


@flow(name="drift", log_prints=True)
def drift_flow(config: HeadwaterConfig | None = None, golden: str | None = None,
               record: bool = False) -> dict[str, Any]:
    """Measure the golden queries on the live alias and compare with the baseline.

    Args:
        golden: The golden-set JSON; default ``runs.golden_set``.
        record: Store the measured nDCG@10 as the new baseline instead of comparing.

    Raises:
        ValueError: no golden set, or one without a baseline (run with ``record``).
        RelevanceDrift: nDCG@10 < baseline - ``runs.drift_margin``.
    """
    config = config or load_config()
    path = Path(golden) if golden else config.runs.golden_set
    if path is None:
        raise ValueError("drift: no golden set: pass one or set runs.golden_set")
    gold = json.loads(path.read_text())
    alias = config.index.collection
    embedder = Embedder(config.embed_model, config.embed)
    qids = list(gold["queries"])
    vectors = dict(zip(qids, embedder.encode([gold["queries"][q] for q in qids]).tolist(), strict=True))
    with weaviate_endpoint(config.weaviate) as endpoint, weaviate_client(endpoint) as client:
        run = run_queries(client, alias, gold["queries"], vectors, doc_key(strip=""), gold["mode"], gold["alpha"],
                          gold["fusion"], tuple(gold["properties"]))
    current = score_run(gold["qrels"], run)["nDCG@10"]
    per_query = {q: score_run({q: gold["qrels"][q]}, {q: run.get(q, {})})["nDCG@10"] for q in qids}
    if record:
        gold.update({"baseline_ndcg@10": current, "recorded_at": dt.datetime.now(dt.UTC).isoformat()})
        path.write_text(json.dumps(gold, indent=2))
    baseline = gold.get("baseline_ndcg@10")
    if baseline is None:
        raise ValueError(f"drift: {path} has no baseline: run it once with record=True")
    floor = baseline - config.runs.drift_margin
    result = {"golden_set": str(path), "queries": len(qids), "ndcg@10": current, "baseline_ndcg@10": baseline,
              "margin": config.runs.drift_margin, "drifted": current < floor, "per_query_ndcg@10": per_query}
    worst = sorted(per_query.items(), key=lambda kv: kv[1])[:10]
    md = "\n".join([
        f"# Headwater relevance: `{alias}` {'DRIFTED' if current < floor else 'ok'}", "",
        f"nDCG@10 **{current:.4f}** over {len(qids)} golden queries; baseline {baseline:.4f} "
        f"(recorded {gold.get('recorded_at')}), alarm below {floor:.4f}.", "",
        "| query | nDCG@10 |", "|---|---:|", *[f"| {gold['queries'][q][:80]} | {v:.3f} |" for q, v in worst], "",
        f"Search: {gold['mode']} (alpha {gold['alpha']}, {gold['fusion']}); Weaviate: {weaviate_location(config)}"])
    publish("drift", alias, result, md, config)
    if current < floor:
        raise RelevanceDrift(f"nDCG@10 of {alias} is {current:.4f}, below baseline {baseline:.4f} - margin "
                             f"{config.runs.drift_margin} (golden set {path})")
    return result
