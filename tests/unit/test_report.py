"""Run reports and the transient-fault rule: pure functions, no server."""

from __future__ import annotations

from pathlib import Path

import httpx
from weaviate.exceptions import UnexpectedStatusCodeError, WeaviateConnectionError

from flows.ingest import IngestReport
from flows.report import artifact_key, ingest_markdown
from infra.retry import is_transient
from schemas.config import HeadwaterConfig


def _error(name: str, stage: str, kind: str, message: str) -> dict[str, object]:
    return {"doc_id": name, "source_uri": f"file:///data/{name}", "stage": stage, "error_type": kind,
            "message": message, "retryable": False}


def test_ingest_markdown_has_counts_stages_top_errors_and_pointers(tmp_path: Path) -> None:
    config = HeadwaterConfig(weaviate={"url": "http://db:8080", "api_key": "s3cret-key"},
                             runs={"report_dir": str(tmp_path), "top_errors": 2})
    errors = [_error(f"e{i}.txt", "parse", "EmptyDocument", "file is empty") for i in range(3)]
    errors += [_error("x.png", "discover", "UnsupportedFileType", "suffix .png | not parsed"),
               _error("y.docx", "parse", "BadZipFile", "not a zip")]
    report = IngestReport(sources=["/data"], collection="Docs", target="Docs_v3", documents_seen=12,
                          documents_added=7, documents_failed=5, chunks=40, chunks_embedded=40, objects_written=40,
                          objects_in_collection=140, ledger_sources=30, stage_seconds={"parse": 1.25, "embed": 9.5},
                          stage_rows={"parse": [12, 300], "embed": [40, 40]}, embed_runtime="openvino bf16 on cpu",
                          wall_seconds=12.0, dashboard_url="http://127.0.0.1:8265", errors=errors)
    md = ingest_markdown("ingest", report, config)
    assert "# Headwater ingest: `Docs` → `Docs_v3`" in md
    assert "| added | 7 |" in md and "| failed | 5 |" in md and "| chunks embedded | 40 |" in md
    assert "| parse | 1.2 | 12 | 300 |" in md and "| embed | 9.5 | 40 | 40 |" in md
    assert "Embedding ran on openvino bf16 on cpu." in md
    assert "## Errors (5 files not indexed)" in md
    assert "| parse | EmptyDocument | 3 | `e0.txt` | file is empty |" in md  # most frequent first
    assert "| … | 1 more groups |" in md  # top_errors=2 of 3 groups
    assert "| discover | UnsupportedFileType | 1 | `x.png` | suffix .png \\| not parsed |" in md
    assert "objects in `Docs_v3`: 140" in md and "http://127.0.0.1:8265" in md and "http://db:8080" in md
    assert "s3cret-key" not in md


def test_artifact_keys_are_what_prefect_accepts() -> None:
    assert artifact_key("ingest", "My_Index_v2") == "headwater-ingest-my-index-v2"


def test_only_transient_faults_are_retried() -> None:
    assert is_transient(WeaviateConnectionError("refused"))
    assert is_transient(UnexpectedStatusCodeError("busy", httpx.Response(503)))
    assert is_transient(httpx.ConnectError("refused"))
    wrapped = RuntimeError("batch failed")
    wrapped.__cause__ = TimeoutError("read timed out")
    assert is_transient(wrapped)
    assert not is_transient(UnexpectedStatusCodeError("bad object", httpx.Response(422)))
    assert not is_transient(ValueError("bad config"))
    assert not is_transient(None)


def test_errors_from_ray_workers_are_seen_through_rays_wrappers() -> None:
    from ray.exceptions import RayTaskError, UserCodeException

    from flows.cli import _describe, _run_error
    from infra.weaviate.connection import WeaviateUnavailable

    try:
        try:
            raise WeaviateUnavailable("cannot reach Weaviate at http://db:8080: connection refused")
        except WeaviateUnavailable as inner:
            raise UserCodeException("UDF failed to process a data block") from inner
    except UserCodeException as udf:
        wrapped = RayTaskError("submit", "traceback", udf).as_instanceof_cause()
    assert is_transient(wrapped)
    found = _run_error(wrapped)
    assert isinstance(found, WeaviateUnavailable)
    assert _describe(found) == "cannot reach Weaviate at http://db:8080: connection refused"
    gone = RayTaskError("write", "traceback", ConnectionError("Weaviate stopped answering")).as_instanceof_cause()
    assert is_transient(gone) and _describe(_run_error(gone)) == "ConnectionError: Weaviate stopped answering"
    bug = RayTaskError("write", "traceback", KeyError("chunk_id")).as_instanceof_cause()
    assert not is_transient(bug) and _run_error(bug) is None
