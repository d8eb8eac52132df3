"""Connect to Ray: a local ``ray.init()`` by default, a cluster via ``ray.address``/``RAY_ADDRESS``."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from infra.environment import QUIET_DEFAULTS
from schemas.config import RayConfig

_PACKAGES = ("flows", "tasks", "schemas", "infra")


@dataclass(frozen=True)
class RayRuntime:
    address: str
    dashboard_url: str | None
    started_here: bool


def init_ray(config: RayConfig) -> RayRuntime:
    """Start or join Ray once per process; returns where it runs and its dashboard.

    On a remote cluster the project's packages travel in the runtime env (``py_modules``),
    so workers run the same code as the driver.
    """
    import ray

    if ray.is_initialized():
        ctx = ray.get_runtime_context()
        return RayRuntime(ctx.gcs_address, _dashboard(), started_here=False)
    address = config.address or os.environ.get("RAY_ADDRESS")
    env_vars = {k: os.environ[k] for k in QUIET_DEFAULTS if k in os.environ}
    # Ray's own log handlers in workers trip ResourceWarnings that say nothing to a user.
    env_vars.setdefault("PYTHONWARNINGS", "ignore::ResourceWarning")
    runtime_env: dict[str, object] = {"env_vars": env_vars}
    if address:
        root = Path(__file__).resolve().parents[2]
        runtime_env["py_modules"] = [str(root / pkg) for pkg in _PACKAGES]
    info = ray.init(
        address=address,
        num_cpus=None if address else config.num_cpus,
        include_dashboard=config.include_dashboard if not address else None,
        runtime_env=runtime_env,
        logging_level=logging.WARNING,
        log_to_driver=True,
        configure_logging=True,
    )
    dashboard = getattr(info, "dashboard_url", None) or None
    if dashboard and not dashboard.startswith("http"):
        dashboard = f"http://{dashboard}"
    return RayRuntime(info.address_info.get("gcs_address", address or "local"), dashboard, started_here=True)


def _dashboard() -> str | None:
    import ray

    return getattr(ray.get_runtime_context(), "dashboard_url", None) or None


def shutdown_ray(runtime: RayRuntime) -> None:
    import ray

    if runtime.started_here and ray.is_initialized():
        ray.shutdown()


class RayOnDemand:
    """Start (or join) Ray the first time a run has documents to process, and stop it at the end
    if this process started it: a run with nothing to parse never pays Ray's start-up."""

    def __init__(self, config: RayConfig) -> None:
        self.config = config
        self.runtime: RayRuntime | None = None

    def ensure(self) -> RayRuntime:
        if self.runtime is None:
            self.runtime = init_ray(self.config)
        return self.runtime

    def __enter__(self) -> RayOnDemand:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.runtime is not None:
            shutdown_ray(self.runtime)
