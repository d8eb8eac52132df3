"""Full ingest of the Debian documentation corpus, then a no-op and a 1 %-edited refresh.

    uv run python benchmarks/ingest.py --docs 10000 --work /tmp/hwbench
    uv run python benchmarks/ingest.py --docs 10000 20000 --no-refresh --work /tmp/hwmem   # memory scaling

Needs the Debian documentation packages listed in ../shared/data/README.md (the script names any that
are missing). The document set is defined reproducibly: every regular file those packages install
under /usr/share/doc and /usr/share/man whose type Headwater parses as a document (HTML, text,
reStructuredText, Markdown, PDF, man pages, and those gzipped), ordered by the SHA-1 of its path, the
first N taken, so that the 10k set is a subset of the 20k set. The files are copied under
DIR/<N>/corpus (the copy is what gets edited) and the list's SHA-256 is printed.

Each run is `headwater ingest` in its own process against an embedded Weaviate started first under
DIR/<N>/data; its whole process tree (the CLI, Ray's processes and workers, the isolated parsers,
and the Weaviate server) is measured: wall, CPU (user + system over wall x cores) and peak RSS.
Per-stage figures come from the run's JSON report (busy seconds summed over each stage's workers).
Results are printed and written to DIR/results.json.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from proctree import TreeUsage, mib, processes_with_cwd, run_measured

PACKAGES = ("python3.11-doc", "postgresql-doc-15", "linux-doc-6.1", "git-doc", "perl-doc", "manpages",
            "manpages-dev", "cmake-doc", "texlive-latex-base-doc", "texlive-latex-recommended-doc", "r-doc-pdf",
            "nodejs-doc")
_PLAIN = {".html", ".htm", ".txt", ".rst", ".md", ".pdf"}
_GZ_INNER = {".txt", ".rst", ".md", ".html", ""}
_MAN = re.compile(r"\.[1-9][a-z]*$")
COLLECTION = "DebianDocs"


def is_document(path: Path) -> bool:
    name = path.name.lower()
    if not name.endswith(".gz"):
        return Path(name).suffix in _PLAIN
    inner = name[: -len(".gz")]
    return Path(inner).suffix in _GZ_INNER or bool(_MAN.search(inner))


def doc_kind(path: Path) -> str:
    name = path.name.lower()
    inner = name.removesuffix(".gz")
    kind = "man page" if _MAN.search(inner) else (Path(inner).suffix or "no suffix")
    return kind + (" (gz)" if name.endswith(".gz") and kind != "man page" else "")


def document_set(limit: int | None = None) -> list[Path]:
    """The first ``limit`` documents of the set (all of them with None)."""
    missing = [p for p in PACKAGES if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode]
    if missing:
        sys.exit("missing Debian documentation packages: " + " ".join(missing)
                 + "\n(install command: ../shared/data/README.md, 'A 10k+ document corpus')")
    files: set[str] = set()
    for package in PACKAGES:
        listed = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=True).stdout
        files.update(line for line in listed.splitlines() if line.startswith(("/usr/share/doc/", "/usr/share/man/")))
    docs = [Path(f) for f in files if os.path.isfile(f) and not os.path.islink(f) and is_document(Path(f))]
    docs.sort(key=lambda p: hashlib.sha1(str(p).encode()).hexdigest())
    if limit is not None and len(docs) < limit:
        sys.exit(f"only {len(docs)} documents in the packages, {limit} asked for")
    return docs[:limit]


def copy_corpus(docs: list[Path], corpus: Path) -> str:
    for src in docs:
        dest = corpus / src.relative_to("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    return hashlib.sha256("\n".join(map(str, docs)).encode()).hexdigest()


def edit(path: Path, run: int) -> None:
    """Append a paragraph to a text-like document (gzipped ones stay gzipped)."""
    line = f"\n\nEdited by the Headwater ingest benchmark (refresh {run}): this paragraph is new.\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as fh:
            data = fh.read()
        with gzip.open(path, "wb") as fh:
            fh.write(data + line.encode())
    elif path.suffix.lower() in (".html", ".htm"):
        text = path.read_text(errors="replace")
        at = text.lower().rfind("</body>")
        at = len(text) if at < 0 else at
        path.write_text(text[:at] + f"<p>{line.strip()}</p>" + text[at:])
    else:
        with path.open("a") as fh:
            fh.write(line)


def headwater(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("headwater")), *args]


def latest_report(report_dir: Path) -> dict[str, Any]:
    reports = sorted(report_dir.glob("ingest-*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(reports[-1].read_text())


def ingest(corpus: Path, env: dict[str, str], weaviate: list[Any], log: Path) -> tuple[TreeUsage, dict[str, Any]]:
    usage = run_measured(headwater("ingest", str(corpus), "--collection", COLLECTION), env=env, extra=weaviate,
                         log=log)
    if usage.returncode != 0:
        sys.exit(f"headwater ingest exited {usage.returncode}: see {log}")
    return usage, latest_report(Path(env["HEADWATER_RUNS__REPORT_DIR"]))


def stage_lines(report: dict[str, Any], wall: float) -> list[str]:
    lines = ["  stage    rows in -> out        busy s   in/busy s   out/busy s   out/wall s"]
    for stage in ("parse", "chunk", "reuse", "embed", "index"):
        if stage not in report["stage_rows"]:
            continue
        rows_in, rows_out = report["stage_rows"][stage]
        busy = report["stage_seconds"][stage]
        lines.append(f"  {stage:<7}{rows_in:>9,} -> {rows_out:<10,}{busy:>8.1f}{rows_in / busy if busy else 0:>12.1f}"
                     f"{rows_out / busy if busy else 0:>13.1f}{rows_out / wall:>13.1f}")
    return lines


def summary(label: str, usage: TreeUsage, report: dict[str, Any]) -> dict[str, Any]:
    docs = report["documents_added"] + report["documents_modified"]
    row = {"run": label, "wall_s": round(usage.wall_s, 1), "cpu_s": round(usage.cpu_s, 1),
           "cpu_share": round(usage.cpu_share(), 3), "peak_rss_mib": round(usage.peak_rss / 2**20),
           "peak_breakdown_mib": {k: round(v / 2**20) for k, v in usage.peak_breakdown.items()},
           "max_processes": usage.max_processes, "documents_indexed": docs,
           "documents_failed": report["documents_failed"], "documents_unchanged": report["documents_unchanged"],
           "chunks_embedded": report["chunks_embedded"], "chunks_reused": report["chunks_reused"],
           "objects_written": report["objects_written"], "objects_in_collection": report["objects_in_collection"],
           "stage_seconds": report["stage_seconds"], "stage_rows": report["stage_rows"],
           "embed_runtime": report.get("embed_runtime", ""), "errors": _error_counts(report["errors"])}
    print(f"\n== {label}: exit 0, wall {usage.wall_s:.1f} s, CPU {usage.cpu_s:.0f} s = "
          f"{100 * usage.cpu_share():.0f} % of {os.cpu_count()} cores, peak RSS {mib(usage.peak_rss)} "
          f"({usage.max_processes} processes at most)")
    print(f"  documents indexed {docs:,} ({docs / usage.wall_s:.2f}/s), failed {report['documents_failed']:,}, "
          f"unchanged {report['documents_unchanged']:,}; chunks embedded {report['chunks_embedded']:,}, reused "
          f"{report['chunks_reused']:,}; objects written {report['objects_written']:,}, in the index "
          f"{report['objects_in_collection']:,}")
    if report["stage_rows"]:
        print("\n".join(stage_lines(report, usage.wall_s)))
    if report.get("embed_runtime"):
        print(f"  embedding ran on {report['embed_runtime']}")
    top = ", ".join(f"{k} {mib(v)}" for k, v in list(usage.peak_breakdown.items())[:6])
    print(f"  at peak RSS: {top}")
    return row


def _error_counts(errors: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in errors:
        counts[e["error_type"]] = counts.get(e["error_type"], 0) + 1
    return counts


def bench_size(n: int, docs: list[Path], work: Path, refresh: bool, seed: int) -> list[dict[str, Any]]:
    base = work / str(n)
    corpus = base / "corpus"
    if base.exists():
        sys.exit(f"{base} exists: pass a new --work directory")
    started = time.perf_counter()
    digest = copy_corpus(docs, corpus)
    mix = Counter(doc_kind(p) for p in docs)
    size = sum(p.stat().st_size for p in docs)
    print(f"\n#### {n:,} documents ({size / 2**20:,.0f} MiB; list sha256 {digest[:16]}; copied in "
          f"{time.perf_counter() - started:.0f} s)")
    print("  mix: " + ", ".join(f"{k} {v:,}" for k, v in mix.most_common()))
    env = dict(os.environ, XDG_DATA_HOME=str(base / "data"), HEADWATER_RUNS__REPORT_DIR=str(base / "reports"))
    subprocess.run(headwater("weaviate", "start"), env=env, check=True, capture_output=True)
    weaviate = processes_with_cwd("weaviate-server", base / "data" / "headwater" / "weaviate")
    if len(weaviate) != 1:
        sys.exit(f"expected one embedded weaviate-server under {base / 'data'}, found {len(weaviate)}")
    rows = []
    try:
        usage, report = ingest(corpus, env, weaviate, base / "ingest.log")
        rows.append(summary(f"full ingest, {n:,} documents", usage, report))
        full_wall = usage.wall_s
        if refresh:
            usage, report = ingest(corpus, env, weaviate, base / "ingest.log")
            rows.append(summary("no-op refresh", usage, report))
            rows[-1]["ratio_to_full"] = round(usage.wall_s / full_wall, 4)
            text_like = sorted(p for p in (corpus / d.relative_to("/") for d in docs) if p.suffix.lower() != ".pdf")
            chosen = random.Random(seed).sample(text_like, max(1, n // 100))
            for path in chosen:
                edit(path, 1)
            usage, report = ingest(corpus, env, weaviate, base / "ingest.log")
            rows.append(summary(f"1 % edited refresh ({len(chosen)} documents)", usage, report))
            rows[-1]["ratio_to_full"] = round(usage.wall_s / full_wall, 4)
            print(f"\n  no-op refresh: {100 * rows[1]['ratio_to_full']:.2f} % of the full ingest's wall "
                  f"(target <= 2 %); 1 % edited: {100 * rows[2]['ratio_to_full']:.2f} % (target <= 5 %)")
    finally:
        subprocess.run(headwater("weaviate", "stop"), env=env, capture_output=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[10_000], help="corpus sizes, each a full ingest")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--no-refresh", action="store_true", help="skip the no-op and 1 %%-edited refreshes")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    all_docs = document_set(max(args.docs))
    print(f"Headwater ingest benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores; "
          f"sizes {args.docs}")
    results: list[dict[str, Any]] = []
    for i, n in enumerate(args.docs):
        results += bench_size(n, all_docs[:n], args.work, refresh=not args.no_refresh and i == 0, seed=args.seed)
        (args.work / "results.json").write_text(json.dumps(results, indent=2))
    full = [r for r in results if r["run"].startswith("full ingest")]
    if len(full) > 1:
        print("\nmemory scaling: " + "; ".join(
            f"peak RSS {r['run'].split(', ')[1]} / {full[0]['run'].split(', ')[1]} = "
            f"{r['peak_rss_mib'] / full[0]['peak_rss_mib']:.2f}" for r in full[1:]) + " (target <= 1.2)")
    print(f"\nresults: {args.work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
