"""What an interceptor must carry over when it wraps a handler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["is_non_blocking", "keep_non_blocking"]

_MARKS = ("experimental_non_blocking", "experimental_thread_pool")


def is_non_blocking(behavior: Callable[..., Any]) -> bool:
    """A streaming handler that answers through ``send_response_callback`` (the health
    service's Watch) and holds no worker thread while its stream is open."""
    return bool(getattr(behavior, "experimental_non_blocking", False))


def keep_non_blocking(inner: Callable[..., Any], wrapper: Callable[..., Any]) -> Callable[..., Any]:
    """``wrapper`` marked as ``inner`` is: gRPC runs a handler marked
    ``experimental_non_blocking`` without holding a worker thread for the stream's life (in
    its ``experimental_thread_pool``, if it names one). An interceptor that returns an
    unmarked wrapper makes every open stream hold one of the server's threads: sixteen idle
    streams froze a server of eight (issue 21)."""
    for name in _MARKS:
        if hasattr(inner, name):
            setattr(wrapper, name, getattr(inner, name))
    return wrapper
