"""The dead-letter store: one record per source that failed a stage, beside the ledger.

A record says which stage failed, why, whether a retry can help, how many runs tried it and
when, and the hash of the bytes that failed. The planner skips a source whose record is not
retryable and whose bytes and config are those that failed (``retry_due``); anything else is
tried again. A source leaves the store when it is indexed or deleted. Pure merge logic here,
Weaviate reads and writes at the bottom.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from schemas.collection import deadletter_name
from tasks.index import delete_by_ids, put_objects

if TYPE_CHECKING:
    import weaviate

_PROPS = ["source_uri", "stage", "error_type", "message", "retryable", "attempts", "first_seen", "last_seen",
          "content_sha256", "config_hash"]


@dataclass(frozen=True)
class DeadLetter:
    doc_id: str
    source_uri: str
    stage: str
    error_type: str
    message: str
    retryable: bool
    attempts: int
    first_seen: dt.datetime
    last_seen: dt.datetime
    content_sha256: str  # of the bytes that failed; '' when they could not be read
    config_hash: str


def retry_due(letter: DeadLetter | None, content_sha256: str, config_hash: str) -> bool:
    """Whether a listed source with this record should be processed again."""
    if letter is None or letter.retryable:
        return True
    return (letter.content_sha256, letter.config_hash) != (content_sha256, config_hash)


def merge_failures(
    previous: Mapping[str, DeadLetter],
    errors: Iterable[Mapping[str, Any]],
    attempted: Mapping[str, str],
    config_hash: str,
    now: dt.datetime,
) -> list[DeadLetter]:
    """The records to write for this run's ERROR rows.

    Args:
        previous: Records before the run, by source_uri.
        errors: ERROR rows of this run.
        attempted: doc_id -> content_sha256 of every document this run parsed (a failure there is an
            attempt); other errors (the listing refused a file) are re-written only when they changed.
        config_hash: The run's semantic config hash.
        now: The run's time stamp.
    """
    out: dict[str, DeadLetter] = {}
    for row in errors:
        uri = str(row["source_uri"])
        old = previous.get(uri)
        sha = attempted.get(str(row["doc_id"]), old.content_sha256 if old else "")
        same_bytes = old is not None and old.content_sha256 == sha
        letter = DeadLetter(
            doc_id=str(row["doc_id"]), source_uri=uri, stage=str(row["stage"]), error_type=str(row["error_type"]),
            message=str(row["message"]), retryable=bool(row["retryable"]),
            attempts=(old.attempts if same_bytes and old else 0) + 1,
            first_seen=old.first_seen if old else now, last_seen=now, content_sha256=sha, config_hash=config_hash,
        )
        if row["doc_id"] not in attempted and old is not None and _same_failure(old, letter):
            continue  # refused by the listing again, as before: nothing new to record
        out[uri] = letter
    return list(out.values())


def _same_failure(old: DeadLetter, new: DeadLetter) -> bool:
    return (old.stage, old.error_type, old.message, old.retryable, old.config_hash) == \
        (new.stage, new.error_type, new.message, new.retryable, new.config_hash)


def as_error_row(letter: DeadLetter) -> dict[str, Any]:
    """An ERROR row for a source skipped because it failed before, for the run report."""
    return {"doc_id": letter.doc_id, "source_uri": letter.source_uri, "stage": letter.stage,
            "error_type": letter.error_type, "message": letter.message, "retryable": letter.retryable}


# --- Weaviate ----------------------------------------------------------------------------------


def read_dead_letters(client: weaviate.WeaviateClient, collection: str,
                      uri_prefix: str | None = None) -> dict[str, DeadLetter]:
    """Every record (whose source_uri starts with ``uri_prefix``), by source_uri."""
    coll = client.collections.use(deadletter_name(collection))
    found: dict[str, DeadLetter] = {}
    for obj in coll.iterator(return_properties=_PROPS):
        p = obj.properties
        uri = str(p["source_uri"])
        if uri_prefix and not uri.startswith(uri_prefix):
            continue
        found[uri] = DeadLetter(
            doc_id=str(obj.uuid), source_uri=uri, stage=str(p["stage"]), error_type=str(p["error_type"]),
            message=str(p["message"]), retryable=bool(p["retryable"]), attempts=int(p["attempts"] or 0),
            first_seen=_date(p["first_seen"]), last_seen=_date(p["last_seen"]),
            content_sha256=str(p.get("content_sha256") or ""), config_hash=str(p.get("config_hash") or ""),
        )
    return found


def write_dead_letters(client: weaviate.WeaviateClient, collection: str, letters: Iterable[DeadLetter]) -> int:
    """Insert or replace records (uuid = doc_id). Raises if Weaviate rejects any."""
    return put_objects(client.collections.use(deadletter_name(collection)), "dead-letter", (
        (d.doc_id, {"source_uri": d.source_uri, "stage": d.stage, "error_type": d.error_type, "message": d.message,
                    "retryable": d.retryable, "attempts": d.attempts, "first_seen": d.first_seen,
                    "last_seen": d.last_seen, "content_sha256": d.content_sha256, "config_hash": d.config_hash})
        for d in letters))


def delete_dead_letters(client: weaviate.WeaviateClient, collection: str, doc_ids: Iterable[str]) -> int:
    return delete_by_ids(client.collections.use(deadletter_name(collection)), doc_ids)


def _date(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))
