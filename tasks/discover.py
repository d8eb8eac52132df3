"""Discover: walk a source folder into a DOCUMENT table (size, mtime, sha256).

Files the parser cannot take, and files that cannot be read, become ERROR records with the
reason; nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from schemas.config import ParseConfig
from schemas.records import DOCUMENT, doc_id_for, error_table

STAGE = "discover"
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Discovery:
    documents: pa.Table  # DOCUMENT
    errors: pa.Table  # ERROR


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_READ_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def source_uri_for(path: Path) -> str:
    return path.resolve().as_uri()


def _walk(root: Path) -> Iterator[Path]:
    """Yield files under root in a stable order; symlinks are not followed out of the root."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _outside(target: Path, root: Path) -> bool:
    try:
        target.relative_to(root)
    except ValueError:
        return True
    return False


def discover_documents(root: Path, config: ParseConfig,
                       known: Mapping[str, tuple[int, int, str]] | None = None) -> Discovery:
    """List the documents under ``root`` (a folder or a single file).

    Args:
        root: Folder to walk, or one file.
        config: Which suffixes are parseable and the size limit.
        known: uri -> (size, mtime_ns, sha256) from the ledger: a file whose size and mtime are
            unchanged keeps its recorded hash instead of being read again (the fast path).

    Returns:
        The DOCUMENT rows of every readable, supported file, and ERROR rows for the rest.

    Raises:
        FileNotFoundError: ``root`` does not exist (a failed listing must never look empty).
    """
    if not root.exists():
        raise FileNotFoundError(f"discover: source {root} does not exist")
    real_root = root.resolve()
    paths = [root] if root.is_file() else list(_walk(root))
    docs: list[dict[str, object]] = []
    errors: list[dict[str, object]] = []
    for path in paths:
        uri = Path(os.path.abspath(path)).as_uri()
        reason = _refusal(path, real_root, config)
        if reason is not None:
            errors.append(_error(uri, *reason))
            continue
        try:
            stat = path.stat()
            recorded = (known or {}).get(uri)
            if recorded is not None and recorded[:2] == (stat.st_size, stat.st_mtime_ns):
                sha = recorded[2]
            else:
                sha = file_sha256(path)
        except OSError as exc:
            errors.append(_error(uri, type(exc).__name__, f"cannot read: {exc.strerror or exc}", True))
            continue
        docs.append(
            {
                "doc_id": doc_id_for(uri),
                "source_uri": uri,
                "path": str(path.resolve()),
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "content_sha256": sha,
            }
        )
    return Discovery(pa.Table.from_pylist(docs, schema=DOCUMENT), error_table(errors))


def _refusal(path: Path, real_root: Path, config: ParseConfig) -> tuple[str, str, bool] | None:
    """Why ``path`` is not handed to the parser, or None when it is."""
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):  # dangling, or a loop (RuntimeError before Python 3.13)
            return ("BrokenSymlink", f"symlink cannot be resolved (dangling or a loop): {os.readlink(path)}", False)
        if _outside(target, real_root) and not config.follow_symlinks_outside_root:
            return ("SymlinkOutsideRoot", f"symlink points outside the source root: {target} (set "
                    "parse.follow_symlinks_outside_root to follow it)", False)
    if not path.is_file():
        return ("NotARegularFile", "not a regular file (broken symlink, socket or device)", False)
    suffix = path.suffix.lower()
    if suffix not in config.extensions:
        shown = suffix or "(no extension)"
        return ("UnsupportedFileType", f"file type {shown} is not parsed (parse.extensions)", False)
    size = path.stat().st_size
    if size > config.max_file_bytes:
        return ("FileTooLarge", f"{size} bytes is over parse.max_file_bytes={config.max_file_bytes}", False)
    return None


def _error(uri: str, error_type: str, message: str, retryable: bool) -> dict[str, object]:
    return {
        "doc_id": doc_id_for(uri),
        "source_uri": uri,
        "stage": STAGE,
        "error_type": error_type,
        "message": message,
        "retryable": retryable,
    }
