"""Freshness scenario on NFCorpus: ingest; edit, delete, rename and add 1 % each; re-ingest; check.

    uv run python benchmarks/freshness_nfcorpus.py [--beir ../shared/data/beir/nfcorpus] [--work DIR]

Writes one text file per NFCorpus document (title, blank line, abstract) under DIR/corpus,
holding 1 % back for the "add" step, ingests into an embedded Weaviate under DIR, then applies
the changes (seeded, so every run is the same) and re-ingests. Expected figures are computed
independently by chunking the files offline; the script exits non-zero when any count is off,
when `verify` finds a problem, or when a no-op re-run embeds or writes anything.
"""

from __future__ import annotations

from infra.environment import apply_quiet_defaults

apply_quiet_defaults()

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pyarrow as pa  # noqa: E402

from flows.ingest import IngestReport, ingest_flow  # noqa: E402
from infra.weaviate.connection import weaviate_client, weaviate_endpoint  # noqa: E402
from schemas.config import HeadwaterConfig, load_config  # noqa: E402
from schemas.records import ELEMENT  # noqa: E402
from tasks.chunk import make_chunker  # noqa: E402
from tasks.index import count_objects  # noqa: E402
from tasks.verify import audit_index  # noqa: E402


def write_corpus(beir: Path, corpus: Path, seed: int) -> tuple[list[Path], list[dict[str, str]]]:
    docs = [json.loads(line) for line in (beir / "corpus.jsonl").open()]
    random.Random(seed).shuffle(docs)
    held = docs[: len(docs) // 100]
    corpus.mkdir(parents=True, exist_ok=True)
    paths = []
    for doc in docs[len(held):]:
        path = corpus / f"{doc['_id']}.txt"
        path.write_text(f"{doc['title']}\n\n{doc['text']}\n")
        paths.append(path)
    return paths, held


def chunk_ids_offline(paths: list[Path], config: HeadwaterConfig) -> dict[str, set[str]]:
    """doc_id -> chunk ids, computed by chunking the files as the parser sees them (text elements)."""
    from tasks.discover import discover_documents
    from tasks.parse import parse_documents

    chunker = make_chunker(config.chunk, config.embed_model)
    out: dict[str, set[str]] = {}
    found = discover_documents(paths[0].parent, config.parse)
    keep = {p.resolve().as_uri() for p in paths}
    docs = found.documents.filter(pa.array([u in keep for u in found.documents.column("source_uri").to_pylist()]))
    for start in range(0, docs.num_rows, 200):
        elements = parse_documents(docs.slice(start, 200), config.parse).elements
        for row in chunker.chunk(elements.cast(ELEMENT)).select(["doc_id", "chunk_id"]).to_pylist():
            out.setdefault(row["doc_id"], set()).add(row["chunk_id"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beir", type=Path, default=Path("../shared/data/beir/nfcorpus"))
    parser.add_argument("--work", type=Path, default=Path("benchmarks/results/freshness-work"))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    corpus = args.work / "corpus"
    if corpus.exists():
        sys.exit(f"{corpus} exists: pass a new --work directory")
    config = load_config(overrides={"weaviate": {"data_dir": str(args.work / "weaviate")},
                                    "index": {"collection": "NfcorpusFreshness"}})
    paths, held = write_corpus(args.beir, corpus, args.seed)
    n = len(held)
    timings: dict[str, float] = {}

    started = time.perf_counter()
    first = ingest_flow(str(corpus), config)
    timings["full ingest"] = time.perf_counter() - started
    started = time.perf_counter()
    noop = ingest_flow(str(corpus), config)
    timings["no-op re-run"] = time.perf_counter() - started

    rng = random.Random(args.seed + 1)
    picked = rng.sample(paths, 3 * n)
    edited, deleted, renamed = picked[:n], picked[n : 2 * n], picked[2 * n :]
    before = chunk_ids_offline(edited, config)
    for path in edited:  # edit one paragraph: the abstract gets a closing sentence
        path.write_text(path.read_text().rstrip("\n") + " This sentence was added in an edit.\n")
    for path in deleted:
        path.unlink()
    (corpus / "moved").mkdir()
    for path in renamed:
        path.rename(corpus / "moved" / path.name)
    for doc in held:
        (corpus / f"{doc['_id']}.txt").write_text(f"{doc['title']}\n\n{doc['text']}\n")
    after = chunk_ids_offline(edited, config)
    added = chunk_ids_offline([corpus / f"{d['_id']}.txt" for d in held], config)
    expected_embedded = sum(len(after[d] - before[d]) for d in after) + sum(map(len, added.values()))

    started = time.perf_counter()
    second = ingest_flow(str(corpus), config)
    timings["1 % changed re-run"] = time.perf_counter() - started

    final_paths = sorted(p for p in corpus.rglob("*.txt"))
    expected_objects = sum(map(len, chunk_ids_offline(final_paths, config).values()))
    with weaviate_endpoint(config.weaviate) as endpoint, weaviate_client(endpoint) as client:
        audit = audit_index(client, config.index.collection)
        objects = count_objects(client, config.index.collection)

    checks = {
        "first: every document added": first.documents_added == len(paths) and first.documents_failed == 0,
        "no-op: nothing embedded or written": (noop.chunks_embedded, noop.objects_written, noop.chunks_deleted)
        == (0, 0, 0) and noop.documents_unchanged == len(paths),
        "added": second.documents_added == n,
        "modified": second.documents_modified == n,
        "renamed": second.documents_renamed == n,
        "deleted": second.documents_deleted == n,
        "unchanged": second.documents_unchanged == len(paths) - 3 * n,
        "failed": second.documents_failed == 0,
        "only edited and added chunks embedded": second.chunks_embedded == expected_embedded,
        "object count exact": objects == expected_objects,
        "verify clean": audit.clean,
    }
    print(f"NFCorpus freshness scenario: {len(paths)} documents ingested, then {n} each edited, deleted, "
          f"renamed and added")
    _print_report("full ingest", first)
    _print_report("no-op re-run", noop)
    _print_report("1 % changed re-run", second)
    print(f"expected chunks embedded {expected_embedded}, objects {expected_objects}; index holds {objects}")
    for name, seconds in timings.items():
        print(f"wall {name}: {seconds:.1f} s ({seconds / timings['full ingest']:.1%} of the full ingest)")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


def _print_report(label: str, r: IngestReport) -> None:
    print(f"{label}: added {r.documents_added} modified {r.documents_modified} renamed {r.documents_renamed} "
          f"deleted {r.documents_deleted} unchanged {r.documents_unchanged} failed {r.documents_failed}; "
          f"chunks embedded {r.chunks_embedded} reused {r.chunks_reused} deleted {r.chunks_deleted}; "
          f"objects written {r.objects_written}, in collection {r.objects_in_collection}")


if __name__ == "__main__":
    sys.exit(main())
