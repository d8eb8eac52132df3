"""A run killed with SIGKILL at any point converges on the next run to exactly a clean build."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.ingest import ingest_flow
from infra.weaviate.connection import WeaviateEndpoint, weaviate_client
from tasks.search import search
from tasks.verify import audit_index
from tests.conftest import make_config, write_corpus
from tests.integration.test_freshness import LONG

pytestmark = [pytest.mark.integration, pytest.mark.slow]
QUERIES = ("Stanley Cup", "glaciers valleys", "quantum flux widget", "Paragraph three rewritten", "volcano")


def build_corpus(root: Path) -> None:
    write_corpus(root)
    (root / "long.txt").write_text(LONG)


def mutate(root: Path) -> None:
    (root / "long.txt").write_text(LONG.replace("Paragraph 3.", "Paragraph three, rewritten."))
    (root / "volcano.txt").rename(root / "renamed-volcano.txt")
    (root / "bread.html").unlink()
    (root / "new.md").write_text("# Glaciers\n\nGlaciers carve U-shaped valleys as they move.\n")


def snapshot(endpoint: WeaviateEndpoint, collection: str, root: Path) -> tuple[set[tuple[str, int, str]], list]:
    """The index as a user sees it, independent of where the corpus lives."""
    prefix = root.resolve().as_uri() + "/"
    with weaviate_client(endpoint) as client:
        rows = {
            (str(o.properties["source_uri"]).removeprefix(prefix), int(o.properties["chunk_index"]),
             str(o.properties["text"]))
            for o in client.collections.use(collection).iterator(
                return_properties=["source_uri", "chunk_index", "text"])
        }
        # The top hit, not scores or the tail: BM25 statistics of a collection with history
        # (deleted objects awaiting compaction) differ slightly from a fresh one's.
        results = [[(h.source_uri.removeprefix(prefix), h.text) for h in search(client, collection, q, "bm25", 1)]
                   for q in QUERIES]
    return rows, results


def run_cli(root: Path, collection: str, endpoint: WeaviateEndpoint, crash_at: str | None,
            kill_on: str | None = None) -> int:
    env = {**os.environ, "HEADWATER_WEAVIATE_URL": endpoint.url,
           "HEADWATER_WEAVIATE_GRPC_URL": f"{endpoint.grpc_host}:{endpoint.grpc_port}",
           "HEADWATER_CHUNK__SIZE_TOKENS": "64", "HEADWATER_CHUNK__OVERLAP_TOKENS": "8",
           "HEADWATER_RAY__INCLUDE_DASHBOARD": "false", "HEADWATER_RUNS__REPORT_DIR": str(root.parent / "reports")}
    env.pop("RAY_ADDRESS", None)  # its own local Ray, like a user's CLI run
    if crash_at:
        env["HEADWATER_CRASH_AT"] = crash_at
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "ingest", str(root), "--collection", collection],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 300
    output = []
    for line in proc.stdout:
        output.append(line)
        if kill_on and kill_on in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "ingest hung"
    rc = proc.wait(timeout=60)
    if rc != -signal.SIGKILL:
        print("".join(output[-40:]))
    return rc


@pytest.fixture(scope="module")
def clean_build(tmp_path_factory: pytest.TempPathFactory, weaviate_endpoint: WeaviateEndpoint,
                ray_local: None, prefect_harness: None) -> tuple[set, list]:
    root = tmp_path_factory.mktemp("clean") / "corpus"
    build_corpus(root)
    mutate(root)
    ingest_flow(str(root), make_config(root.parent, weaviate_endpoint, index={"collection": "CleanBuild"}))
    return snapshot(weaviate_endpoint, "CleanBuild", root)


@pytest.mark.parametrize(
    ("crash_at", "kill_on"),
    [
        (None, "Running Dataset"),  # killed from outside while parse tasks run
        ("during_upsert", None),
        ("after_upsert", None),  # new chunks written, stale ones not yet deleted
        ("before_ledger", None),  # stale deleted, ledger not yet written
    ],
)
def test_killed_ingest_converges_to_a_clean_build(
    crash_at: str | None, kill_on: str | None, tmp_path: Path, weaviate_endpoint: WeaviateEndpoint,
    ray_local: None, prefect_harness: None, clean_build: tuple[set, list],
) -> None:
    collection = f"Crash{(crash_at or 'parse').title().replace('_', '')}"
    root = tmp_path / "corpus"
    build_corpus(root)
    config = make_config(tmp_path, weaviate_endpoint, index={"collection": collection})
    ingest_flow(str(root), config)
    mutate(root)

    rc = run_cli(root, collection, weaviate_endpoint, crash_at, kill_on)
    assert rc == -signal.SIGKILL

    with weaviate_client(weaviate_endpoint) as client:  # no document lost its chunks meanwhile
        hits = search(client, collection, "Stanley Cup", "bm25", 1)
        assert hits and hits[0].source_uri.endswith("hockey.md")
    report = ingest_flow(str(root), config)
    assert report.documents_failed == 3  # empty.txt, broken.docx, image.png: as in any run
    with weaviate_client(weaviate_endpoint) as client:
        audit = audit_index(client, collection)
    assert audit.clean, audit.rows()
    assert snapshot(weaviate_endpoint, collection, root) == clean_build
