"""The in-process engine of a parameter set: the one place that maps a set to its product step.

Kept apart from :mod:`fedmatch.he.engines` (which imports the multi-process and Ray engines)
so that those engines can build their workers' engines here without an import cycle.
"""

from __future__ import annotations

from typing import Any

from fedmatch.he.engine import PackedBase, PackedEngine
from fedmatch.he.params import ParamSet

__all__ = ["local_engine"]


def local_engine(params: ParamSet, dimension: int, threads: int | None = None) -> PackedBase[Any]:
    """A kernel set (``ParamSet.kernel``) gets the native product kernel on ``threads``
    cores (default: all this process may use), any other set SEAL's products. What a node
    runs in-process, and what a worker process or actor runs."""
    if params.kernel:
        # Imported only here: a node of the default set never loads numba.
        from fedmatch.he.kernel_engine import KernelEngine

        return KernelEngine(params, dimension, threads)
    return PackedEngine(params, dimension)
