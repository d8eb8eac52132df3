"""A write lease per alias, held in Weaviate itself: two runs never write one index at once.

The lease lives beside the index it guards, so it holds for every way a run starts: the CLI,
a Prefect deployment (whose own concurrency limit only queues runs of that one deployment) or a
backfill on another worker. It is one object with a deterministic uuid: creating it succeeds
for exactly one holder. The holder renews it while the run lasts; a lease whose holder process
is gone (same host) or that was not renewed within ``ttl_s`` is taken over, so a killed run
never blocks the next one for long.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from schemas.collection import LEASE_COLLECTION, ensure_lease_collection

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import weaviate

    from infra.weaviate.connection import WeaviateEndpoint
    from schemas.config import CollectionConfig

_NAMESPACE = uuid.UUID("6f9d51a4-1c55-4f8e-9a43-2f7c1f8e0b11")


class WriteLeaseHeld(RuntimeError):
    """Another run is writing this index; nothing was changed."""


@dataclass(frozen=True)
class LeaseHolder:
    holder: str
    host: str
    pid: int
    purpose: str
    acquired_at: dt.datetime
    renewed_at: dt.datetime

    def describe(self) -> str:
        return (f"{self.purpose} run {self.holder} (pid {self.pid} on {self.host}) since "
                f"{self.acquired_at:%Y-%m-%d %H:%M:%S} UTC, renewed {self.renewed_at:%H:%M:%S}")


def lease_id(alias: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, alias))


@contextmanager
def write_lease(endpoint: WeaviateEndpoint, alias: str, purpose: str, wait_s: float = 0.0,
                ttl_s: float = 300.0, layout: CollectionConfig | None = None) -> Iterator[str]:
    """Hold the write lease of ``alias`` for the ``with`` block, renewing it in the background.

    Args:
        endpoint: The Weaviate holding the index.
        alias: The index (alias) name.
        purpose: What the run does ("ingest", "backfill"): shown to whoever is refused.
        wait_s: Wait this long for a held lease before giving up.
        ttl_s: A lease not renewed for this long is abandoned and may be taken over.
        layout: Replication of the lease collection when this creates it (``collection`` config), so
            one node down on a cluster does not stop every writer.

    Raises:
        WriteLeaseHeld: another live run holds the lease (after ``wait_s``).
    """
    from infra.weaviate.connection import weaviate_client

    me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    with weaviate_client(endpoint) as client:
        coll = ensure_lease_collection(client, layout)
        deadline = time.monotonic() + wait_s
        while not _try_acquire(coll, alias, me, purpose, ttl_s):
            if time.monotonic() >= deadline:
                current = _read(coll, alias)
                who = current.describe() if current else "another run"
                raise WriteLeaseHeld(f"index {alias!r} is being written by {who}; try again when it ends")
            time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(endpoint, alias, me, ttl_s / 3, stop),
                               name=f"lease-{alias}", daemon=True)
    renewer.start()
    try:
        yield me
    finally:
        stop.set()
        renewer.join(timeout=10)
        try:
            with weaviate_client(endpoint) as client:
                _release(client.collections.use(LEASE_COLLECTION), alias, me)
        except Exception as exc:  # Weaviate gone: the run's own error matters; the lease expires (pid, ttl)
            _log.warning("could not release the write lease of %s (%s); the next run takes it over", alias, exc)


def _try_acquire(coll: weaviate.collections.Collection, alias: str, me: str, purpose: str, ttl_s: float) -> bool:
    now = dt.datetime.now(dt.UTC)
    props = {"alias": alias, "holder": me, "host": socket.gethostname(), "pid": os.getpid(),
             "purpose": purpose, "acquired_at": now, "renewed_at": now}
    if _create(coll, alias, props):
        return True
    current = _read(coll, alias)
    if current is not None and _abandoned(current, ttl_s):
        _release(coll, alias, current.holder)  # only that holder's object: a newer taker keeps its own
        return _create(coll, alias, props)
    return False


def _create(coll: weaviate.collections.Collection, alias: str, props: dict[str, object]) -> bool:
    """Create the lease object; False when it exists (Weaviate answers 422 for a taken id)."""
    from weaviate.exceptions import UnexpectedStatusCodeError

    try:
        coll.data.insert(props, uuid=lease_id(alias))
        return True
    except UnexpectedStatusCodeError as exc:
        if exc.status_code != 422:
            raise
        return False


def _abandoned(lease: LeaseHolder, ttl_s: float) -> bool:
    if (dt.datetime.now(dt.UTC) - lease.renewed_at).total_seconds() > ttl_s:
        return True
    if lease.host != socket.gethostname():
        return False
    try:
        os.kill(lease.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _read(coll: weaviate.collections.Collection, alias: str) -> LeaseHolder | None:
    obj = coll.query.fetch_object_by_id(lease_id(alias))
    if obj is None:
        return None
    p = obj.properties
    return LeaseHolder(str(p["holder"]), str(p["host"]), int(p["pid"]), str(p["purpose"]),  # type: ignore[arg-type]
                       p["acquired_at"], p["renewed_at"])  # type: ignore[arg-type]


def _release(coll: weaviate.collections.Collection, alias: str, holder: str) -> None:
    from weaviate.classes.query import Filter

    coll.data.delete_many(where=Filter.by_id().equal(lease_id(alias)) & Filter.by_property("holder").equal(holder))


def _renew(endpoint: WeaviateEndpoint, alias: str, me: str, every_s: float, stop: threading.Event) -> None:
    from infra.weaviate.connection import weaviate_client

    while not stop.wait(every_s):
        try:
            with weaviate_client(endpoint) as client:
                coll = client.collections.use(LEASE_COLLECTION)
                current = _read(coll, alias)
                if current is None or current.holder != me:
                    return  # taken over: the run goes on, and its writes stay idempotent
                coll.data.update(lease_id(alias), {"renewed_at": dt.datetime.now(dt.UTC)})
        except Exception:  # a missed renewal only shortens the lease; the next try may work
            continue
