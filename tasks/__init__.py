"""Headwater stages: plain functions and small classes over Arrow tables (no Prefect here).

``STAGES`` declares what each stage takes and gives; :func:`check_stage_chain` proves the chain
fits before a run starts, so a contract break fails at assembly, not halfway through a corpus.
"""

from __future__ import annotations

import itertools

import pyarrow as pa

from schemas.records import CHUNK, DOCUMENT, ELEMENT, EMBEDDED_CHUNK, ContractError

# (stage, takes, gives), in pipeline order
STAGES: list[tuple[str, pa.Schema | None, pa.Schema]] = [
    ("discover", None, DOCUMENT),
    ("parse", DOCUMENT, ELEMENT),
    ("chunk", ELEMENT, CHUNK),
    ("embed", CHUNK, EMBEDDED_CHUNK),
    ("index", EMBEDDED_CHUNK, EMBEDDED_CHUNK),
]


def check_stage_chain(stages: list[tuple[str, pa.Schema | None, pa.Schema]] = STAGES) -> None:
    """Raise ContractError unless every stage's output carries the fields the next one takes."""
    for (name, _, gives), (next_name, takes, _) in itertools.pairwise(stages):
        assert takes is not None
        for fld in takes:
            if fld.name not in gives.names or gives.field(fld.name).type != fld.type:
                raise ContractError(f"{name} -> {next_name}: {name} does not give {fld.name}: {fld.type}")
