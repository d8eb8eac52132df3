"""Stemmed keyword field and the text that is embedded per chunk."""

from __future__ import annotations

import pyarrow as pa

from tasks.embed import passages
from tasks.stemming import stem_text, uses_stemmed


def test_stemming_matches_word_forms_like_an_ir_engine() -> None:
    assert stem_text("Cancers, running; statin-users!") == stem_text("cancer run statin user")
    assert stem_text("Vitamin D3") == "vitamin d3"
    assert uses_stemmed(("text_stemmed^2", "title")) and not uses_stemmed(("text", "title"))


def test_title_context_is_added_once() -> None:
    chunks = pa.table({"text": ["Statins and survival\n\nRecent studies...", "Later we found..."],
                       "title": ["Statins and survival", "Statins and survival"]})
    assert passages(chunks, "title") == ["Statins and survival\n\nRecent studies...",
                                         "Statins and survival\n\nLater we found..."]
    assert passages(chunks, "text") == chunks.column("text").to_pylist()
