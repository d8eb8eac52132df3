"""The collection layout (shards, replication, HNSW, compression): config and what creation asks for."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.collection import _replication, vector_index
from schemas.config import CollectionConfig, HeadwaterConfig


def test_layout_is_an_execution_setting() -> None:
    clustered = HeadwaterConfig(collection={"shards": 6, "replication_factor": 3, "compression": "rq",
                                            "ef_construction": 256})
    assert clustered.semantic_hash() == HeadwaterConfig().semantic_hash()


@pytest.mark.parametrize("values", [{"replication_factor": 0}, {"compression": "lz4"}, {"shards": 0},
                                    {"ef": -2}, {"replica_count": 3}])
def test_invalid_layout_is_an_error(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CollectionConfig(**values)


def test_default_layout_is_one_node_as_before() -> None:
    layout = CollectionConfig()
    assert _replication(layout) is None
    index = vector_index(layout)
    assert index.quantizer is None  # type: ignore[attr-defined]
    assert (index.efConstruction, index.maxConnections, index.ef) == (128, 32, -1)  # type: ignore[attr-defined]


def test_replicated_compressed_layout() -> None:
    layout = CollectionConfig(replication_factor=3, compression="rq", max_connections=16)
    replication = _replication(layout)
    assert replication.factor == 3  # type: ignore[union-attr]
    assert replication.deletionStrategy.value == "TimeBasedResolution"  # type: ignore[union-attr]
    index = vector_index(layout)
    assert index.quantizer.bits == 8 and index.maxConnections == 16  # type: ignore[attr-defined]
