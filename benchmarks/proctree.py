"""Measure a command's whole process tree: wall, CPU seconds (user + system) and peak resident memory.

The tree is the command and every descendant (Ray's GCS, raylet, workers, the parse actors' child
parsers), plus any already-running processes passed in ``extra`` (the embedded Weaviate, which
outlives a CLI run). Sampled with psutil every ``interval`` seconds: CPU time is each process's last
reading (less its reading when first seen, for ``extra`` processes that were running before), so a
process that lives less than one interval is missed; memory is the sum of RSS over the tree at each
sample (shared pages count once per process that maps them, as ``ps`` would).
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass
class TreeUsage:
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss: int = 0
    peak_breakdown: dict[str, int] = field(default_factory=dict)  # process kind -> RSS at the peak
    max_processes: int = 0
    returncode: int | None = None

    def cpu_share(self, cores: int | None = None) -> float:
        """CPU seconds over (wall x cores): 1.0 means every core busy all the time."""
        return self.cpu_s / (self.wall_s * (cores or os.cpu_count() or 1)) if self.wall_s else 0.0


def _kind(proc: psutil.Process) -> str:
    try:
        cmd = proc.cmdline()
        name = proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "?"
    if cmd and cmd[0].startswith("ray::"):
        return re.sub(r"\)\.\w+$", ")", cmd[0].split()[0])  # e.g. ray::MapWorker(MapBatches(EmbedStep))
    if "tasks.isolate" in cmd:
        return "parser child"
    for marker in ("weaviate-server", "gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py"):
        if any(marker in part for part in cmd[:3]) or marker in name:
            return marker
    return name


class _Sampler(threading.Thread):
    def __init__(self, root: psutil.Process, extra: list[psutil.Process], interval: float) -> None:
        super().__init__(daemon=True)
        self.root, self.extra, self.interval = root, extra, interval
        self.stop = threading.Event()
        self.cpu: dict[tuple[int, float], float] = {}
        self.baseline: dict[tuple[int, float], float] = {}
        self.usage = TreeUsage()
        for proc in extra:  # CPU already spent before the command started does not count
            key, cpu = self._read_cpu(proc)
            if key:
                self.baseline[key] = cpu

    @staticmethod
    def _read_cpu(proc: psutil.Process) -> tuple[tuple[int, float] | None, float]:
        try:
            t = proc.cpu_times()
            return (proc.pid, proc.create_time()), t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None, 0.0

    def sample(self) -> None:
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        tree += self.extra
        rss, kinds = 0, Counter()
        for proc in tree:
            key, cpu = self._read_cpu(proc)
            if key is None:
                continue
            self.cpu[key] = cpu
            try:
                mem = proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            rss += mem
            kinds[_kind(proc)] += mem
        self.usage.max_processes = max(self.usage.max_processes, len(tree))
        if rss > self.usage.peak_rss:
            self.usage.peak_rss = rss
            self.usage.peak_breakdown = dict(kinds.most_common())

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)

    def finish(self) -> TreeUsage:
        self.stop.set()
        self.join()
        self.usage.cpu_s = sum(cpu - self.baseline.get(key, 0.0) for key, cpu in self.cpu.items())
        return self.usage


def run_measured(cmd: list[str], env: dict[str, str] | None = None, extra: list[psutil.Process] | None = None,
                 log: Path | None = None, interval: float = 0.5, cwd: Path | None = None) -> TreeUsage:
    """Run ``cmd`` to completion and return what its process tree used."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    sampler = _Sampler(psutil.Process(proc.pid), extra or [], interval)
    sampler.start()
    returncode = proc.wait()
    wall = time.perf_counter() - started
    usage = sampler.finish()
    usage.wall_s, usage.returncode = wall, returncode
    if log:
        out.close()
    return usage


def processes_with_cwd(name: str, cwd: Path) -> list[psutil.Process]:
    """Running processes called ``name`` whose working directory is ``cwd`` (an embedded Weaviate)."""
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] == name and Path(proc.cwd()) == cwd.resolve():
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.0f} MiB"
