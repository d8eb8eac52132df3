"""Install the pinned Weaviate server binary, cached per version.

With Go on PATH the server is built from source (``go install ...@<version>``, CGO off);
without Go, Weaviate's own release archive of the same version is downloaded where the
network allows. When neither works, the error says exactly what is needed.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx

MODULE = "github.com/weaviate/weaviate/cmd/weaviate-server"
RELEASE_URL = "https://github.com/weaviate/weaviate/releases/download/{v}/weaviate-{v}-Linux-{arch}.tar.gz"


# Where Go's own installer puts it, for shells whose PATH lacks it.
_GO_FALLBACKS = ("/usr/local/go/bin/go", str(Path.home() / "go" / "bin" / "go"))


class InstallError(RuntimeError):
    """The Weaviate server binary could not be installed; the message says what is missing."""


def cache_dir() -> Path:
    root = os.environ.get("HEADWATER_BIN_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "headwater" / "bin"


def binary_path(version: str) -> Path:
    return cache_dir() / f"weaviate-{version}" / "weaviate-server"


def install(version: str, say: Callable[[str], None] = print) -> Path:
    """Return the cached binary of ``version``, building or downloading it first when absent.

    Idempotent: a second call returns at once. The binary appears atomically (built into a
    temporary directory, then renamed), so an interrupted install never leaves half a file.

    Raises:
        InstallError: neither a Go build nor a release download worked.
    """
    target = binary_path(version)
    if target.is_file() and os.access(target, os.X_OK):
        say(f"weaviate-server {version} already installed: {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    go = shutil.which("go") or next((g for g in _GO_FALLBACKS if os.access(g, os.X_OK)), None)
    if go:
        try:
            _go_install(go, version, target, say)
            return target
        except InstallError as exc:
            problems.append(str(exc))
    else:
        problems.append("Go is not on PATH (needed to build from source: Go >= 1.24)")
    try:
        _download_release(version, target, say)
        return target
    except InstallError as exc:
        problems.append(str(exc))
    raise InstallError(
        f"could not install weaviate-server {version}:\n  - " + "\n  - ".join(problems) + "\n"
        f"Install Go and re-run `headwater weaviate install`, or put a weaviate-server {version} "
        f"binary at {target} (or set HEADWATER_WEAVIATE__BINARY), or point HEADWATER_WEAVIATE_URL "
        "at a running Weaviate."
    )


def _go_install(go: str, version: str, target: Path, say: Callable[[str], None]) -> None:
    say(f"building weaviate-server {version} with {go} (CGO_ENABLED=0); first build takes minutes")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        env = {**os.environ, "CGO_ENABLED": "0", "GOBIN": tmp, "GOFLAGS": "-mod=mod"}
        cmd = [go, "install", "-x" if os.environ.get("HEADWATER_GO_VERBOSE") else "-v", f"{MODULE}@{version}"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for packages, line in enumerate(proc.stdout, 1):
            if packages % 100 == 0 or line.startswith(("go: downloading github.com/weaviate", "go: ")):
                say(f"  go: {packages} packages ... {line.strip()[:100]}")
        if proc.wait() != 0:
            raise InstallError(f"`{' '.join(cmd)}` exited with {proc.returncode}")
        built = Path(tmp) / "weaviate-server"
        if not built.is_file():
            raise InstallError(f"go install produced no binary in {tmp}")
        os.replace(built, target)
    say(f"installed {target}")


def _download_release(version: str, target: Path, say: Callable[[str], None]) -> None:
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine())
    if platform.system() != "Linux" or arch is None:
        raise InstallError(f"no Weaviate release binary for {platform.system()}/{platform.machine()}")
    url = RELEASE_URL.format(v=version, arch=arch)
    say(f"downloading {url}")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = Path(tmp) / "weaviate.tar.gz"
        try:
            with httpx.stream("GET", url, follow_redirects=True, timeout=60) as resp:
                resp.raise_for_status()
                with open(archive, "wb") as fh:
                    for block in resp.iter_bytes():
                        fh.write(block)
        except httpx.HTTPError as exc:
            raise InstallError(f"download of {url} failed: {exc}") from exc
        with tarfile.open(archive) as tar:
            member = next((m for m in tar.getmembers() if Path(m.name).name == "weaviate"), None)
            if member is None:
                raise InstallError(f"{url} holds no 'weaviate' binary")
            tar.extract(member, tmp, filter="data")
            extracted = Path(tmp) / member.name
        extracted.chmod(0o755)
        os.replace(extracted, target)
    say(f"installed {target}")
