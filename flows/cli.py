"""The ``headwater`` command line."""

from __future__ import annotations

from infra.environment import apply_quiet_defaults
from infra.faults import arm

apply_quiet_defaults()  # before unstructured, Ray or Prefect are imported anywhere
arm()

import contextlib  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated, Any, NoReturn  # noqa: E402

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from schemas.config import HeadwaterConfig, load_config  # noqa: E402

app = typer.Typer(help="Keep a hybrid (BM25 + vector) Weaviate index fresh for RAG.", no_args_is_help=True)
weaviate_app = typer.Typer(help="The embedded Weaviate server.", no_args_is_help=True)
app.add_typer(weaviate_app, name="weaviate")
console = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML config file.", exists=True)]
CollectionOpt = Annotated[str | None, typer.Option("--collection", help="Weaviate collection name.")]


def _config(config_file: Path | None, collection: str | None = None) -> HeadwaterConfig:
    overrides: dict[str, Any] = {"index": {"collection": collection}} if collection else {}
    return load_config(config_file, overrides)


def _run_errors() -> tuple[type[BaseException], ...]:
    """Failures a user can act on: printed as one clear line, exit 1 (anything else is a bug: traceback)."""
    from flows.backfill import BackfillRejected
    from flows.ingest import IndexConfigChanged
    from infra.weaviate.connection import WeaviateUnavailable
    from infra.weaviate.install import InstallError
    from infra.weaviate.lease import WriteLeaseHeld

    # ConnectionError/TimeoutError: Weaviate went away mid-run and the task's retries ran out.
    return (InstallError, WeaviateUnavailable, FileNotFoundError, ValueError, WriteLeaseHeld, IndexConfigChanged,
            BackfillRejected, ConnectionError, TimeoutError)


def _run_error(exc: BaseException) -> BaseException | None:
    """The error a user can act on in ``exc``'s chain, looking through Ray's wrappers of a worker's
    error (``RayTaskError.cause``, ``UserCodeException``), or None for anything else (a bug)."""
    found: BaseException | None = None
    current: BaseException | None = exc
    for _ in range(12):
        if current is None:
            break
        if isinstance(current, _run_errors()):
            found = current  # keep looking: the innermost one says it best
        inner = getattr(current, "cause", None)
        current = inner if isinstance(inner, BaseException) else current.__cause__
    return found


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:500]
    return text if isinstance(exc, _run_errors()[:-2]) else f"{type(exc).__name__}: {text}"


def _fail(command: str, exc: BaseException) -> NoReturn:
    """Print a run error as one line and exit 1; re-raise anything else (a bug deserves its traceback)."""
    found = _run_error(exc)
    if found is None:
        raise exc
    err.print(f"[red]{command} failed:[/red] {_describe(found)}")
    raise typer.Exit(1) from exc


@contextlib.contextmanager
def _live_index(config: HeadwaterConfig, command: str) -> Iterator[tuple[Any, str]]:
    """A client to the configured Weaviate and the version the index's alias names. Weaviate unreachable,
    or no such index: one clear line and exit 1."""
    from infra.weaviate.connection import WeaviateUnavailable, weaviate_client, weaviate_endpoint
    from schemas.collection import resolve_target

    try:
        with weaviate_endpoint(config.weaviate, say=lambda m: err.print(f"[dim]{m}[/dim]")) as endpoint, \
                weaviate_client(endpoint) as client:
            name = resolve_target(client, config.index.collection)
            if name is None:
                err.print(f"[red]no collection {config.index.collection!r}[/red]: run `headwater ingest` first")
                raise typer.Exit(1)
            yield client, name
    except WeaviateUnavailable as exc:
        err.print(f"[red]{command} failed:[/red] {_describe(exc)}")
        raise typer.Exit(1) from exc


def _prepare_weaviate(config: HeadwaterConfig) -> None:
    """Install the embedded server's binary when it is needed; with a URL, check that server answers
    (and takes the key) before a flow run starts, so a wrong address is one clear line.

    Raises:
        WeaviateUnavailable: the configured Weaviate does not answer or refuses the credentials.
    """
    from infra.weaviate.install import install

    if config.weaviate.url:
        from infra.weaviate.connection import remote_endpoint, weaviate_client

        with weaviate_client(remote_endpoint(config.weaviate)):
            return
    if not config.weaviate.binary:
        install(config.weaviate.version, say=lambda m: err.print(f"[dim]{m}[/dim]"))


@app.command()
def ingest(
    path: Annotated[Path | None, typer.Argument(help="Folder (or file) to ingest; default: index.sources.")] = None,
    collection: CollectionOpt = None,
    config_file: ConfigOpt = None,
    allow_mass_delete: Annotated[bool, typer.Option(
        "--allow-mass-delete", help="Delete vanished sources even beyond index.max_delete_fraction.")] = False,
) -> None:
    """Bring the index up to date with PATH: new, edited, renamed and deleted files."""
    from flows.ingest import ingest_flow

    config = _config(config_file, collection)
    try:
        _prepare_weaviate(config)
        report = ingest_flow(str(path) if path else None, config, allow_mass_delete)
    except Exception as exc:
        _fail("ingest", exc)
    _print_report(report)


@app.command()
def backfill(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Folders to build from; default: index.sources, else those the live version came from.")] = None,
    collection: CollectionOpt = None,
    config_file: ConfigOpt = None,
) -> None:
    """Rebuild the index as a new version, check it, and switch the alias to it (no downtime)."""
    from flows.backfill import backfill_flow

    config = _config(config_file, collection)
    try:
        _prepare_weaviate(config)
        report = backfill_flow([str(p) for p in paths] if paths else None, config)
    except Exception as exc:
        _fail("backfill", exc)
    _print_report(report.build)
    console.print(f"alias {report.alias} -> {report.target} (was {report.previous or 'none'}); "
                  f"checks {report.checks}; dropped {', '.join(report.dropped) or 'none'}")


@app.command()
def serve(
    source: Annotated[list[Path] | None, typer.Option(
        "--source", help="Folder the scheduled ingest refreshes (repeatable); default index.sources.")] = None,
    ingest_cron: Annotated[str | None, typer.Option(help="Cron of the ingest deployment.")] = None,
    collection: CollectionOpt = None,
    config_file: ConfigOpt = None,
) -> None:
    """Serve the index's Prefect deployments: scheduled ingest, manual backfill, scheduled verify."""
    import json
    import os

    from flows.deployments import serve_deployments

    # Flow runs start in child processes and load their config from the environment, like a worker's.
    if config_file:
        os.environ["HEADWATER_CONFIG"] = str(config_file.resolve())
    if collection:
        os.environ["HEADWATER_INDEX__COLLECTION"] = collection
    if source:
        os.environ["HEADWATER_INDEX__SOURCES"] = json.dumps([str(p.resolve()) for p in source])
    if ingest_cron:
        os.environ["HEADWATER_RUNS__INGEST_CRON"] = ingest_cron
    config = load_config()
    if not config.index.sources:
        err.print("[red]serve:[/red] the ingest deployment needs sources: --source PATH or index.sources")
        raise typer.Exit(2)
    try:
        _prepare_weaviate(config)
    except Exception as exc:
        _fail("serve", exc)
    if not config.weaviate.url:
        # Started here and left running, so that concurrent flow runs share it and none stops it.
        from infra.weaviate.connection import embedded_server

        state, _ = embedded_server(config.weaviate).start()
        console.print(f"embedded Weaviate: {state.http_url} (data {config.weaviate.data_dir})")
    serve_deployments(config)


def _print_report(report: Any) -> None:
    if report.errors:
        console.print(f"[bold]{len(report.errors)} files not indexed[/bold] (stage, error, file: reason):")
        for e in sorted(report.errors, key=lambda e: (e["stage"], e["error_type"], e["source_uri"])):
            where = e["source_uri"].removeprefix("file://")
            console.print(f"  {e['stage']:<8} {e['error_type']:<22} {where}: {e['message']}",
                          soft_wrap=True, markup=False, highlight=False)
    summary = Table(title=f"ingest {report.source} -> {report.collection} ({report.target})", title_justify="left")
    summary.add_column("measure")
    summary.add_column("value", justify="right")
    for label, value in (
        ("documents seen", report.documents_seen),
        ("documents added", report.documents_added),
        ("documents modified", report.documents_modified),
        ("documents renamed", report.documents_renamed),
        ("documents deleted", report.documents_deleted),
        ("documents unchanged", report.documents_unchanged),
        ("documents failed", report.documents_failed),
        ("  of which not retried (unchanged)", report.documents_not_retried),
        ("chunks (of processed documents)", report.chunks),
        ("chunks embedded", report.chunks_embedded),
        ("chunks reused", report.chunks_reused),
        ("chunks deleted", report.chunks_deleted),
        ("objects written", report.objects_written),
        ("objects in collection", report.objects_in_collection),
    ):
        summary.add_row(label, str(value))
    for stage, seconds in report.stage_seconds.items():
        summary.add_row(f"seconds: {stage}", f"{seconds:.1f}")
    summary.add_row("seconds: wall", f"{report.wall_seconds:.1f}")
    console.print(summary)
    if report.deletion_refused:
        err.print(f"[yellow]deletions refused:[/yellow] {report.deletion_refused}")
    if report.dashboard_url:
        console.print(f"Ray dashboard (while Ray ran): {report.dashboard_url}")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    mode: Annotated[str | None, typer.Option(help="hybrid | bm25 | vector (default query.mode)")] = None,
    limit: Annotated[int, typer.Option(help="Number of results.", min=1, max=1000)] = 5,
    alpha: Annotated[float | None, typer.Option(help="Hybrid weight of the vector side.", min=0, max=1)] = None,
    fusion: Annotated[str | None, typer.Option(help="Hybrid fusion: relative_score | ranked.")] = None,
    properties: Annotated[str | None, typer.Option(
        help="BM25 fields with optional boosts, comma-separated, e.g. 'text,title^2'.")] = None,
    rerank_model: Annotated[str | None, typer.Option(help="CrossEncoder that re-ranks the top hits.")] = None,
    collection: CollectionOpt = None,
    config_file: ConfigOpt = None,
) -> None:
    """Query the index: prints source, page, title, section, scores and a snippet per hit."""
    from tasks.embed import Embedder
    from tasks.search import CrossEncoderReranker
    from tasks.search import search as run_search

    overrides: dict[str, Any] = {k: v for k, v in (("mode", mode), ("alpha", alpha), ("fusion", fusion),
                                                   ("rerank_model", rerank_model)) if v is not None}
    if properties:
        overrides["properties"] = tuple(p.strip() for p in properties.split(",") if p.strip())
    try:
        config = load_config(config_file, {"query": overrides, **({"index": {"collection": collection}}
                                                                   if collection else {})})
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    q = config.query
    embedder = Embedder(config.embed_model, config.embed) if q.mode != "bm25" else None
    reranker = CrossEncoderReranker(q.rerank_model) if q.rerank_model else None
    with _live_index(config, "search") as (client, _):
        hits = run_search(client, config.index.collection, query, q.mode, limit, embedder, q.alpha,
                          fusion=q.fusion, properties=q.properties, reranker=reranker, rerank_top=q.rerank_top)
    console.print(f"[bold]{q.mode}[/bold] results for {query!r} in {config.index.collection}"
                  + (f", re-ranked by {q.rerank_model}" if reranker else "") + ":")
    if not hits:
        console.print("  (no results)")
    for rank, hit in enumerate(hits, 1):
        where = hit.source_uri.removeprefix("file://") + (f" (page {hit.page_number})" if hit.page_number else "")
        heading = " › ".join(x for x in (hit.title, hit.section) if x)
        snippet = " ".join(hit.text.split())[:240]
        scores = f"{hit.score:.4f}" + (f" (search {hit.search_score:.4f})" if hit.rerank_score is not None else "")
        console.print(f"{rank:>2}. [bold]{scores}[/bold]  {where}", soft_wrap=True)
        console.print(f"    {heading}", soft_wrap=True, markup=False)
        console.print(f"    {snippet}", soft_wrap=True, markup=False)


@app.command("eval")
def evaluate(
    beir_dir: Annotated[Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.",
                                             exists=True, file_okay=False)],
    split: Annotated[str, typer.Option(help="qrels split to score.")] = "test",
    docs: Annotated[Path | None, typer.Option(help="Ingest this folder (e.g. the corpus as PDFs) instead of "
                                              "corpus.jsonl.", exists=True, file_okay=False)] = None,
    doc_ids: Annotated[Path | None, typer.Option(help="JSON: file name in --docs -> BEIR document id.",
                                                 exists=True, dir_okay=False)] = None,
    alpha: Annotated[list[float] | None, typer.Option(help="Hybrid weight(s) to measure (repeatable).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for eval-<collection>.json/.md.")] = None,
    save_golden: Annotated[Path | None, typer.Option(help="Also write the split's queries and judgements as a "
                                                     "golden set for `headwater drift`, with the hybrid "
                                                     "nDCG@10 as its baseline.")] = None,
    collection: CollectionOpt = None,
    config_file: ConfigOpt = None,
) -> None:
    """Ingest a BEIR corpus through the pipeline, run its queries per mode, print nDCG@10 / MRR@10 / R@100."""
    from flows.evaluate import eval_flow
    from tasks.evaluate import markdown_table

    config = _config(config_file, collection)
    if collection is None:  # one index per corpus and semantic config, so each is built once and kept
        source = "Pdf" if docs else ""
        name = f"Eval{beir_dir.resolve().name.title()}{source}{config.chunk.strategy.title()}{config.chunk.size_tokens}"
        config = config.bound_to("".join(ch for ch in name if ch.isalnum()) + f"C{config.semantic_hash()[:8]}")
    try:
        _prepare_weaviate(config)
        result = eval_flow(str(beir_dir), config, split, str(docs) if docs else None,
                           str(doc_ids) if doc_ids else None, None, str(out) if out else None, alpha)
    except Exception as exc:
        _fail("eval", exc)
    console.print(f"{result['queries']} queries, {result['documents_indexed']} documents, {result['chunks']} chunks "
                  f"in {result['collection']}:")
    console.print(markdown_table(result["rows"]), markup=False, highlight=False)
    p = result["bm25_parity"]
    console.print(f"BM25 parity (text field): Weaviate {p['weaviate_ndcg@10']:.4f} vs rank-bm25 "
                  f"{p['rank_bm25_ndcg@10']:.4f} nDCG@10, top-10 overlap {p['overlap@10']:.1%}")
    if save_golden:
        import json

        from flows.drift import golden_set
        from tasks.evaluate import load_beir

        if docs:
            err.print("[red]--save-golden[/red] needs the materialised corpus (no --docs)")
            raise typer.Exit(2)
        data = load_beir(beir_dir, split)
        qrels = {q: {f"{d}.md": r for d, r in rel.items()} for q, rel in data.qrels.items()}
        hybrid = next(r for r in result["rows"] if r["mode"] == f"hybrid α={config.query.alpha}")
        save_golden.write_text(json.dumps(golden_set(data.queries, qrels, config, hybrid["nDCG@10"]), indent=2))
        console.print(f"golden set: {save_golden} (baseline nDCG@10 {hybrid['nDCG@10']:.4f})")


@app.command()
def drift(
    golden: Annotated[Path | None, typer.Option(help="Golden set JSON (default runs.golden_set).",
                                                exists=True, dir_okay=False)] = None,
    record: Annotated[bool, typer.Option("--record", help="Record the current nDCG@10 as the baseline.")] = False,
    collection: CollectionOpt = None,
    config_file: ConfigOpt = None,
) -> None:
    """Re-run the golden queries on the live index; exit 1 when nDCG@10 fell below baseline - margin."""
    from flows.drift import RelevanceDrift, drift_flow

    config = _config(config_file, collection)
    try:
        result = drift_flow(config, str(golden) if golden else None, record)
    except (*_run_errors(), RelevanceDrift) as exc:
        err.print(f"[red]drift:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"nDCG@10 {result['ndcg@10']:.4f} over {result['queries']} queries; baseline "
                  f"{result['baseline_ndcg@10']:.4f} (margin {result['margin']})"
                  + (" — recorded" if record else ": ok"))


@app.command()
def verify(
    repair: Annotated[bool, typer.Option("--repair", help="Delete orphan/stale objects; forget sources "
                                         "whose chunks are missing so the next ingest rebuilds them.")] = False,
    collection: CollectionOpt = None,
    config_file: ConfigOpt = None,
) -> None:
    """Audit the ledger against the index; exit 1 when anything is wrong (after --repair: if still wrong)."""
    from tasks.verify import verify_index

    config = _config(config_file, collection)
    with _live_index(config, "verify") as (client, name):
        result = verify_index(client, name, repair)
    _print_audit(name, result.before)
    if result.after is not None:
        console.print(f"repair: deleted {result.deleted} objects, forgot {result.forgotten} ledger entries"
                      + (" (run `headwater ingest` again to rebuild them)" if result.forgotten else ""))
        _print_audit(name, result.after)
    if not result.final.clean:
        raise typer.Exit(1)


@app.command()
def errors(
    stage: Annotated[str | None, typer.Option(help="Only this stage (discover, parse, index).")] = None,
    error_type: Annotated[str | None, typer.Option("--type", help="Only this error type.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per record.")] = False,
    collection: CollectionOpt = None,
    config_file: ConfigOpt = None,
) -> None:
    """List the dead-letter store: every source that failed a stage, why, and whether a run retries it.

    A failed source is tried again by the next ingest only when its error is retryable or its bytes
    (or the parser/chunker/model config) changed."""
    import json

    from tasks.deadletter import read_dead_letters

    config = _config(config_file, collection)
    with _live_index(config, "errors") as (client, name):
        letters = sorted(read_dead_letters(client, name).values(), key=lambda d: (d.stage, d.error_type, d.source_uri))
    letters = [d for d in letters if (stage is None or d.stage == stage)
               and (error_type is None or d.error_type == error_type)]
    if as_json:
        for d in letters:
            print(json.dumps({**d.__dict__, "first_seen": d.first_seen.isoformat(),
                              "last_seen": d.last_seen.isoformat()}))
        return
    table = Table(title=f"dead letters of {config.index.collection} ({name}): {len(letters)}", title_justify="left")
    for col in ("stage", "error", "retry", "attempts", "last seen", "source", "reason"):
        table.add_column(col, overflow="fold")
    for d in letters:
        table.add_row(d.stage, d.error_type, "yes" if d.retryable else "if changed", str(d.attempts),
                      d.last_seen.strftime("%Y-%m-%d %H:%M"), d.source_uri.removeprefix("file://"), d.message)
    console.print(table)


def _print_audit(name: str, audit: Any) -> None:
    table = Table(title=f"verify {name}: {'clean' if audit.clean else 'PROBLEMS FOUND'}", title_justify="left")
    for col, justify in (("check", "left"), ("count", "right"), ("status", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for check, count, status in audit.rows():
        table.add_row(check, str(count), status)
    console.print(table)


@weaviate_app.command("install")
def weaviate_install(config_file: ConfigOpt = None) -> None:
    """Build (or download) the pinned weaviate-server binary into the cache."""
    from infra.weaviate.install import InstallError, install

    config = _config(config_file)
    try:
        path = install(config.weaviate.version, say=console.print)
    except InstallError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(str(path))


@weaviate_app.command("start")
def weaviate_start(config_file: ConfigOpt = None) -> None:
    """Start the embedded server and leave it running (ingest and search then reuse it)."""
    from infra.weaviate.connection import embedded_server
    from infra.weaviate.install import install

    config = _config(config_file)
    _require_embedded(config)
    install(config.weaviate.version, say=lambda m: err.print(f"[dim]{m}[/dim]"))
    state, started = embedded_server(config.weaviate).start()
    verb = "started" if started else "already running"
    console.print(f"{verb}: {state.http_url} (gRPC {state.ports['grpc']}, pid {state.pid}, "
                  f"data {config.weaviate.data_dir})")


@weaviate_app.command("stop")
def weaviate_stop(config_file: ConfigOpt = None) -> None:
    """Stop the embedded server cleanly."""
    from infra.weaviate.connection import embedded_server

    config = _config(config_file)
    _require_embedded(config)
    console.print("stopped" if embedded_server(config.weaviate).stop() else "not running")


@weaviate_app.command("status")
def weaviate_status(config_file: ConfigOpt = None) -> None:
    """Say whether the embedded server runs, where, and whether it is ready."""
    from infra.weaviate.connection import embedded_server

    config = _config(config_file)
    _require_embedded(config)
    server = embedded_server(config.weaviate)
    state = server.running()
    if state is None:
        console.print(f"not running (data {config.weaviate.data_dir}, binary {server.binary}"
                      f"{'' if server.binary.is_file() else ' — not installed'})")
        raise typer.Exit(3)
    ready = "ready" if server.ready(state) else "NOT ready"
    console.print(f"running, {ready}: {state.http_url} (gRPC {state.ports['grpc']}, pid {state.pid}, "
                  f"Weaviate {state.version}, data {config.weaviate.data_dir})")


def _require_embedded(config: HeadwaterConfig) -> None:
    if config.weaviate.url:
        err.print(f"HEADWATER_WEAVIATE_URL is set ({config.weaviate.url}): the embedded server is not used")
        raise typer.Exit(2)


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
