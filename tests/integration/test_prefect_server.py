"""Against a real ``prefect server start`` on loopback: ``headwater serve`` creates the deployments,
a run triggered through the REST API completes, and its report artifact is there."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra.weaviate.connection import WeaviateEndpoint, weaviate_client
from tasks.index import count_objects
from tests.conftest import write_corpus

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = ("chromium-headless-shell", "chromium", "chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A real Prefect server (API and UI) on a free loopback port, with its own home and database."""
    port = _free_port()
    home = tmp_path / "prefect-home"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api"}
    log = (tmp_path / "prefect-server.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        _wait_for(lambda: httpx.get(f"{api}/health", timeout=2).status_code == 200, 120, server, "prefect server")
        yield api, env
    finally:
        _stop(server)
        log.close()


def _wait_for(ready: object, timeout: float, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited with {proc.returncode}"
        try:
            if ready():  # type: ignore[operator]
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"{what} not ready after {timeout} s")


def _run_deployment(api: str, flow: str, deployment: str, serve: subprocess.Popen[bytes]) -> dict[str, object]:
    dep = httpx.get(f"{api}/deployments/name/{flow}/{deployment}", timeout=10).json()
    run = httpx.post(f"{api}/deployments/{dep['id']}/create_flow_run", json={}, timeout=10).json()
    final: dict[str, object] = {}

    def finished() -> bool:
        final.update(httpx.get(f"{api}/flow_runs/{run['id']}", timeout=10).json())
        return final["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}  # type: ignore[index]

    _wait_for(finished, 480, serve, f"flow run of {flow}/{deployment}")
    return final


def test_serve_deployments_and_trigger_a_run_through_the_api(
    tmp_path: Path, prefect_server: tuple[str, dict[str, str]], weaviate_endpoint: WeaviateEndpoint,
) -> None:
    api, env = prefect_server
    corpus = tmp_path / "corpus"
    write_corpus(corpus)
    reports = tmp_path / "reports"
    serve_env = {**env, "HEADWATER_WEAVIATE_URL": weaviate_endpoint.url,
                 "HEADWATER_WEAVIATE_GRPC_URL": f"{weaviate_endpoint.grpc_host}:{weaviate_endpoint.grpc_port}",
                 "HEADWATER_CHUNK__SIZE_TOKENS": "64", "HEADWATER_CHUNK__OVERLAP_TOKENS": "8",
                 "HEADWATER_RAY__INCLUDE_DASHBOARD": "false", "HEADWATER_RUNS__REPORT_DIR": str(reports)}
    serve_env.pop("RAY_ADDRESS", None)
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--source", str(corpus), "--collection", "Served",
         "--ingest-cron", "0 0 1 1 *"], cwd=ROOT, env=serve_env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        def deployed() -> bool:
            found = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
            return {d["name"] for d in found} == {"served"} and len(found) == 3

        _wait_for(deployed, 180, serve, "headwater serve")
        ingest = httpx.get(f"{api}/deployments/name/ingest/served", timeout=10).json()
        assert [s["schedule"]["cron"] for s in ingest["schedules"]] == ["0 0 1 1 *"]
        assert ingest["global_concurrency_limit"]["limit"] == 1
        assert ingest["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
        backfill = httpx.get(f"{api}/deployments/name/backfill/served", timeout=10).json()
        assert backfill["schedules"] == [] and backfill["concurrency_options"]["collision_strategy"] == "ENQUEUE"

        run = _run_deployment(api, "ingest", "served", serve)
        assert run["state"]["type"] == "COMPLETED", (tmp_path / "serve.log").read_text()[-4000:]  # type: ignore[index]
        artifacts = httpx.post(f"{api}/artifacts/filter", timeout=10,
                               json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}).json()
        report = next(a for a in artifacts if a["key"] == "headwater-ingest-served")
        assert report["type"] == "markdown"
        assert "| added | 5 |" in report["data"] and "| failed | 3 |" in report["data"]
        assert "EmptyDocument" in report["data"] and "`Served` → `Served_v1`" in report["data"]
        saved = json.loads(next(reports.glob("ingest-Served-*.json")).read_text())
        assert saved["flow_run_id"] == run["id"] and saved["documents_added"] == 5
        with weaviate_client(weaviate_endpoint) as client:
            assert count_objects(client, "Served") == saved["objects_in_collection"] > 0

        pool = subprocess.run([sys.executable, "-m", "prefect", "work-pool", "create", "headwater-process",
                               "--type", "process", "--base-job-template",
                               str(ROOT / "infra/prefect/process-work-pool.json")],
                              env=env, capture_output=True, text=True, timeout=120)
        assert pool.returncode == 0, pool.stdout + pool.stderr
        created = httpx.get(f"{api}/work_pools/headwater-process", timeout=10).json()
        template = json.loads((ROOT / "infra/prefect/process-work-pool.json").read_text())
        assert created["type"] == "process" and created["base_job_template"] == template

        verify = _run_deployment(api, "verify", "served", serve)
        assert verify["state"]["type"] == "COMPLETED"  # type: ignore[index]
        _screenshot_if_asked(api, run["id"])  # type: ignore[arg-type]
    finally:
        _stop(serve)
        log.close()


def _screenshot_if_asked(api: str, flow_run_id: str) -> None:
    """With HEADWATER_SCREENSHOT_DIR set and a headless Chromium installed, photograph the UI's
    page of the finished run and its artifact (how docs/images/ was made)."""
    out = os.environ.get("HEADWATER_SCREENSHOT_DIR")
    browser = next((b for b in map(shutil.which, CHROMIUM) if b), None)
    if not out or not browser:
        return
    ui = api.removesuffix("/api")
    artifact = httpx.post(f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}},
                          timeout=10).json()[0]
    for name, url in (("prefect-flow-run.png", f"{ui}/runs/flow-run/{flow_run_id}"),
                      ("prefect-artifact.png", f"{ui}/artifacts/artifact/{artifact['id']}")):
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1400,1000", "--virtual-time-budget=15000",
                        f"--screenshot={Path(out) / name}", url], check=True, timeout=120,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
