"""English stemming for the BM25 side: Weaviate tokenizes words but does not stem them.

Each chunk also carries ``text_stemmed`` — its words lower-cased, split like Weaviate's ``word``
tokenization and reduced by the Snowball (Porter2) stemmer — and a keyword query against that
field is stemmed the same way, so "cancers" finds "cancer". The plain ``text`` field stays as it
was for every other consumer.
"""

from __future__ import annotations

import re
from functools import lru_cache

STEMMED_SUFFIX = "_stemmed"
_WORD = re.compile(r"[0-9a-z]+")


@lru_cache(maxsize=1)
def _stemmer():  # type: ignore[no-untyped-def]
    import Stemmer

    return Stemmer.Stemmer("english")


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric runs: Weaviate's ``word`` tokenization."""
    return _WORD.findall(text.lower())


def stem_text(text: str) -> str:
    """``text`` as space-separated stemmed words."""
    return " ".join(_stemmer().stemWords(words(text)))


def uses_stemmed(properties: tuple[str, ...] | list[str]) -> bool:
    """Whether a keyword query over ``properties`` (``name^boost`` allowed) must be stemmed."""
    return any(p.split("^")[0].endswith(STEMMED_SUFFIX) for p in properties)
