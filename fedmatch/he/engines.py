"""The factory that picks a node's search engine: the single place to switch implementations.

It lives apart from :mod:`fedmatch.he.engine` because it imports the engines built on that
module (:mod:`fedmatch.he.sharded`, :mod:`fedmatch.he.ray_engine`): kept there, the base
module and its extensions would import each other.
"""

from __future__ import annotations

from fedmatch.errors import ConfigError, InvalidInput
from fedmatch.he.engine import SearchEngine
from fedmatch.he.local import local_engine
from fedmatch.he.params import ParamSet

__all__ = ["create_engine"]


def create_engine(
    params: ParamSet,
    dimension: int,
    workers: int = 1,
    *,
    backend: str = "local",
    ray_address: str = "",
) -> SearchEngine:
    """The engine a node uses; the single place to switch implementations. The parameter
    set picks the product step (see :func:`local_engine`). ``workers`` > 1 spreads the
    blocks over that many processes (tenseal holds the GIL). ``backend="ray"``
    puts them on ``workers`` Ray actors instead (0: one per CPU of the Ray runtime), started
    locally or on the cluster at ``ray_address`` (see :mod:`fedmatch.he.ray_engine`)."""
    if backend == "ray":
        # Imported only here: a local node never loads ray.
        try:
            from fedmatch.he.ray_engine import RayEngine
        except ModuleNotFoundError as exc:
            if exc.name != "ray":
                raise
            raise ConfigError('engine "ray" needs the ray package (fedmatch[ray])') from None
        return RayEngine(params, dimension, workers, ray_address)
    if backend != "local":
        raise InvalidInput(f"unknown search engine backend {backend!r} (local or ray)")
    if workers > 1:
        from fedmatch.he.sharded import ShardedEngine

        return ShardedEngine(params, dimension, workers)
    return local_engine(params, dimension)
