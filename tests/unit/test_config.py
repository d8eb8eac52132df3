from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.config import HeadwaterConfig, load_config


def test_env_nested_and_documented_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADWATER_CHUNK__SIZE_TOKENS", "128")
    monkeypatch.setenv("HEADWATER_WEAVIATE_URL", "https://weaviate.example:8443")
    monkeypatch.setenv("HEADWATER_WEAVIATE_API_KEY", "s3cret")
    config = load_config()
    assert config.chunk.size_tokens == 128
    assert config.weaviate.url == "https://weaviate.example:8443"
    assert config.weaviate.api_key is not None and config.weaviate.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config) and "s3cret" not in str(config.model_dump())


def test_toml_then_env_then_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "hw.toml"
    toml.write_text('[chunk]\nsize_tokens = 100\noverlap_tokens = 10\n[index]\ncollection = "FromFile"\n')
    monkeypatch.setenv("HEADWATER_CHUNK__OVERLAP_TOKENS", "20")
    config = load_config(toml, {"index": {"collection": "FromFlag"}})
    assert (config.chunk.size_tokens, config.chunk.overlap_tokens) == (100, 20)
    assert config.index.collection == "FromFlag"


@pytest.mark.parametrize(
    "values",
    [
        {"chunk": {"strategy": "magic"}},
        {"chunk": {"size_tokens": 64, "overlap_tokens": 64}},
        {"no_such_section": {}},
        {"index": {"collection": "lowercase"}},
        {"embed": {"precision": "int3"}},
    ],
)
def test_invalid_values_are_errors(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        HeadwaterConfig(**values)


def test_config_is_frozen() -> None:
    config = HeadwaterConfig()
    with pytest.raises(ValidationError):
        config.index = config.index  # type: ignore[misc]


def test_semantic_hash_ignores_execution_settings() -> None:
    base = HeadwaterConfig()
    faster = HeadwaterConfig(embed={"batch_size": 7, "device": "cpu"}, index={"batch_size": 3})
    other_model = HeadwaterConfig(embed_model={"model": "/models/e5"})
    smaller = HeadwaterConfig(chunk={"size_tokens": 128})
    assert base.semantic_hash() == faster.semantic_hash()
    assert base.semantic_hash() != other_model.semantic_hash()
    assert base.semantic_hash() != smaller.semantic_hash()
