"""Process-wide defaults, set once at the entry points: telemetry off, hubs offline, bounded client retries.

Each is a default (``setdefault``): a user who sets the variable keeps their value.
"""

from __future__ import annotations

import os

QUIET_DEFAULTS = {
    "DO_NOT_TRACK": "1",  # unstructured (and others honouring the convention)
    "SCARF_NO_ANALYTICS": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",  # models load from packages or the local cache, never a hub
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
    # The Weaviate client retries an unavailable server with exponential backoff, by default ~30 min
    # per batch; 4 is ~1 min, enough for a restart, then the run fails and says so.
    "WEAVIATE_BATCH_MAX_RETRIES": "4",
}


def apply_quiet_defaults() -> dict[str, str]:
    """Apply the defaults to this process (before unstructured, Ray or Prefect are imported)."""
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in QUIET_DEFAULTS}
