"""Bad files against the real pipeline: each is recorded in the dead-letter store with its reason,
never retried unchanged, retried once fixed, forgotten once deleted; a poison file costs its own
time limit, not the run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.ingest import ingest_flow
from infra.weaviate.connection import WeaviateEndpoint, weaviate_client
from tasks.deadletter import read_dead_letters
from tasks.search import search
from tests import adversarial
from tests.conftest import make_config, write_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BAD = {"truncated.docx": "CorruptDocument", "latin-garbage.txt": "UndecodableText",
       "locked.pdf": "EncryptedDocument", "one-line.txt": "ParseTimeout", "broken.docx": "CorruptDocument",
       "empty.txt": "EmptyDocument", "image.png": "UnsupportedFileType"}


def test_dead_letters_are_recorded_skipped_retried_and_forgotten(
    tmp_path: Path, weaviate_endpoint: WeaviateEndpoint, ray_local: None, prefect_harness: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "corpus"
    write_corpus(root)  # 5 good files, plus empty.txt, image.png and broken.docx
    rng = random.Random(3)
    adversarial.truncated_docx(root / "truncated.docx", rng)
    adversarial.invalid_utf8(root / "latin-garbage.txt", rng)
    adversarial.encrypted_pdf(root / "locked.pdf", rng)
    adversarial.single_line(root / "one-line.txt", rng, megabytes=20)  # minutes to parse unbounded
    config = make_config(tmp_path, weaviate_endpoint, index={"collection": "DeadLetters"},
                         parse_limits={"timeout_s": 4})

    first = ingest_flow(str(root), config)
    assert (first.documents_added, first.documents_failed, first.documents_not_retried) == (5, len(BAD), 0)
    with weaviate_client(weaviate_endpoint) as client:
        letters = {Path(d.source_uri).name: d for d in read_dead_letters(client, first.target).values()}
        assert {name: d.error_type for name, d in letters.items()} == BAD
        assert all(d.attempts == 1 and d.message for d in letters.values())
        assert "parse_limits.timeout_s=4" in letters["one-line.txt"].message
        assert letters["truncated.docx"].stage == "parse" and letters["image.png"].stage == "discover"
        hits = search(client, "DeadLetters", "Stanley Cup", "bm25", 1)
        assert hits and hits[0].source_uri.endswith("hockey.md")

    # Unchanged: nothing is parsed again, the failures stay on record (and in the report).
    second = ingest_flow(str(root), config)
    assert (second.documents_unchanged, second.documents_failed, second.documents_not_retried) == (5, len(BAD), 6)
    assert "parse" not in second.stage_seconds
    assert {e["error_type"] for e in second.errors} == set(BAD.values())

    # Fixed, deleted, and edited-but-still-bad files.
    (root / "latin-garbage.txt").write_text("Glaciers carve U-shaped valleys as they move downhill.\n")
    (root / "truncated.docx").unlink()
    adversarial.corrupt_docx(root / "broken.docx", rng)
    third = ingest_flow(str(root), config)
    assert (third.documents_added, third.documents_failed, third.documents_not_retried) == (1, 5, 3)
    with weaviate_client(weaviate_endpoint) as client:
        letters = {Path(d.source_uri).name: d for d in read_dead_letters(client, third.target).values()}
        assert "latin-garbage.txt" not in letters and "truncated.docx" not in letters
        assert letters["broken.docx"].attempts == 1  # new bytes: a new count
        assert letters["one-line.txt"].attempts == 1  # skipped, not attempted again
        hits = search(client, "DeadLetters", "glaciers valleys", "bm25", 1)
        assert hits and hits[0].source_uri.endswith("latin-garbage.txt")

    # The operator's view: `headwater errors`, as a table and as JSON.
    grpc = f"{weaviate_endpoint.grpc_host}:{weaviate_endpoint.grpc_port}"
    for name, value in (("HEADWATER_WEAVIATE_URL", weaviate_endpoint.url), ("HEADWATER_WEAVIATE_GRPC_URL", grpc),
                        ("COLUMNS", "250")):
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    result = runner.invoke(app, ["errors", "--collection", "DeadLetters"])
    assert result.exit_code == 0, result.output
    assert "dead letters of DeadLetters (DeadLetters_v1): 5" in result.output and "ParseTimeout" in result.output
    result = runner.invoke(app, ["errors", "--collection", "DeadLetters", "--json", "--stage", "parse"])
    records = [json.loads(line) for line in result.output.splitlines()]
    assert sorted(r["error_type"] for r in records) == ["CorruptDocument", "EmptyDocument", "EncryptedDocument",
                                                        "ParseTimeout"]
    assert all(r["retryable"] is False and r["content_sha256"] for r in records)
