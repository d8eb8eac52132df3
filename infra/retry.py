"""Which faults a retry can fix. Retries happen at one layer, the Prefect task; this says when."""

from __future__ import annotations

from typing import Any

_RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


def is_transient(exc: BaseException | None) -> bool:
    """True for faults that may pass on their own: the server unreachable, restarting or overloaded,
    a timeout. False for everything else (bad config, a rejected object, a bug), which a retry would
    only repeat. Looks through the exception's causes, and through Ray's wrappers of a worker's error."""
    from weaviate.exceptions import (
        UnexpectedStatusCodeError,
        WeaviateConnectionError,
        WeaviateGRPCUnavailableError,
        WeaviateRetryError,
        WeaviateTimeoutError,
    )

    from infra.weaviate.connection import WeaviateUnavailable

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, UnexpectedStatusCodeError):
            return exc.status_code in _RETRYABLE_STATUS
        if isinstance(exc, (WeaviateConnectionError, WeaviateGRPCUnavailableError, WeaviateRetryError,
                            WeaviateTimeoutError, WeaviateUnavailable, ConnectionError, TimeoutError)):
            return True
        if type(exc).__module__.startswith("httpx") and type(exc).__name__ in {
                "ConnectError", "ReadTimeout", "WriteTimeout", "ConnectTimeout", "PoolTimeout", "RemoteProtocolError"}:
            return True
        inner = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError: the worker's own exception
        exc = inner if isinstance(inner, BaseException) else (exc.__cause__ or exc.__context__)
        seen += 1
    return False


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed task run only for a transient fault."""
    try:
        state.result()
    except Exception as exc:  # the state's exception is what we classify
        return is_transient(exc)
    return False
