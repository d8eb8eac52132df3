"""Run reports: every flow run publishes a Prefect markdown artifact and writes the same data as JSON.

What an operator needs after a run: counts by outcome, seconds per stage, the top errors with
their reasons, the index size, and where to look next. Secrets never enter a report: the config
is summarised field by field, and the Weaviate API key is not one of those fields.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.config import HeadwaterConfig

if TYPE_CHECKING:
    from flows.ingest import IngestReport


def artifact_key(kind: str, alias: str) -> str:
    """Prefect artifact keys allow lower-case letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", f"headwater-{kind}-{alias}".lower()).strip("-")


def publish(kind: str, alias: str, data: dict[str, Any], markdown: str, config: HeadwaterConfig) -> Path:
    """Write ``data`` as JSON under ``runs.report_dir`` and publish ``markdown`` as an artifact.

    Returns:
        The JSON file's path (also named at the end of the artifact).
    """
    from prefect.artifacts import create_markdown_artifact
    from prefect.runtime import flow_run

    run_id = str(flow_run.get_id() or "") or f"pid{os.getpid()}"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = config.runs.report_dir / f"{kind}-{alias}-{stamp}-{run_id[:8]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"kind": kind, "alias": alias, "finished_at": stamp, "flow_run_id": run_id, **data,
               "weaviate": weaviate_location(config)}
    path.write_text(json.dumps(payload, indent=2, default=str))
    if flow_run.get_id():
        create_markdown_artifact(markdown=f"{markdown}\n\nJSON report: `{path}`\n", key=artifact_key(kind, alias),
                                 description=f"Headwater {kind} report for {alias}")
    return path


def weaviate_location(config: HeadwaterConfig) -> str:
    """Where the index lives, without credentials."""
    w = config.weaviate
    return w.url or f"embedded server (data {w.data_dir})"


def publish_ingest_report(kind: str, report: IngestReport, config: HeadwaterConfig) -> Path:
    data = dataclasses.asdict(report)
    return publish(kind, report.collection, data, ingest_markdown(kind, report, config), config)


def ingest_markdown(kind: str, report: IngestReport, config: HeadwaterConfig) -> str:
    """The markdown of an ingest (or a backfill's build): outcomes, stages, errors, index, pointers."""
    lines = [f"# Headwater {kind}: `{report.collection}` → `{report.target}`", "",
             f"Sources: {', '.join(f'`{s}`' for s in report.sources)}; wall {report.wall_seconds:.1f} s.", "",
             "| documents | count |", "|---|---:|"]
    for outcome in ("seen", "added", "modified", "renamed", "deleted", "unchanged", "failed", "not_retried"):
        lines.append(f"| {outcome.replace('_', ' ')} | {getattr(report, f'documents_{outcome}')} |")
    lines += ["", "| chunks | count |", "|---|---:|"]
    for outcome in ("chunks", "chunks_embedded", "chunks_reused", "chunks_deleted", "objects_written"):
        lines.append(f"| {outcome.replace('_', ' ')} | {getattr(report, outcome)} |")
    lines += ["", "| stage | busy seconds | rows in | rows out |", "|---|---:|---:|---:|"]
    for stage, seconds in report.stage_seconds.items():
        rows_in, rows_out = report.stage_rows.get(stage, ("", ""))
        lines.append(f"| {stage} | {seconds:.1f} | {rows_in} | {rows_out} |")
    if report.embed_runtime:
        lines += ["", f"Embedding ran on {report.embed_runtime}."]
    lines += ["", *error_lines(report.errors, config.runs.top_errors)]
    if report.deletion_refused:
        lines += ["", f"**Deletions refused:** {report.deletion_refused}"]
    lines += ["", "## Index", "", f"- objects in `{report.target}`: {report.objects_in_collection}",
              f"- sources in its ledger: {report.ledger_sources}", "", *where_lines(report, config)]
    return "\n".join(lines)


def error_lines(errors: list[dict[str, Any]], top: int) -> list[str]:
    """The most frequent (stage, error type) groups, each with one example file and reason."""
    if not errors:
        return ["## Errors", "", "None."]
    groups = Counter((e["stage"], e["error_type"]) for e in errors)
    example = {(e["stage"], e["error_type"]): e for e in reversed(errors)}
    lines = [f"## Errors ({len(errors)} files not indexed)", "", "| stage | error | files | example | reason |",
             "|---|---|---:|---|---|"]
    for (stage, kind), count in groups.most_common(top):
        e = example[(stage, kind)]
        name = Path(str(e["source_uri"]).removeprefix("file://")).name
        reason = _cell(str(e["message"]))
        lines.append(f"| {stage} | {kind} | {count} | `{_cell(name)}` | {reason} |")
    if len(groups) > top:
        lines.append(f"| … | {len(groups) - top} more groups | | | see the JSON report |")
    return lines


def where_lines(report: Any, config: HeadwaterConfig) -> list[str]:
    lines = ["## Where to look", "", f"- Weaviate: {weaviate_location(config)}; consumers query the alias "
             f"`{report.collection}`, now `{report.target}`"]
    if getattr(report, "dashboard_url", None):
        lines.append(f"- Ray dashboard (while the run's Ray was up): {report.dashboard_url}")
    lines.append("- Audit the index: `headwater verify`")
    return lines


def _cell(text: str) -> str:
    return " ".join(text.split())[:200].replace("|", "\\|")
