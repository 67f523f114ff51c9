"""The packed engine on a Ray cluster: register shards held by Ray actors.

Same contract as :class:`fedmatch.he.engine.PackedEngine` and the same composition as
:mod:`fedmatch.he.sharded`, with Ray actors in place of local worker processes, so a node's
register can outgrow one machine:

- Block ``b`` (8,192 rows) lives in actor ``b % W``, which holds that block's rows (to
  re-encode it on enrolment or erasure) and its encoded diagonals, encoded with the
  baby-step/giant-step split chosen at load for one actor's share of the blocks (as the
  sharded engine does). The driver (the node process) keeps only the row count, that split
  and the per-query layout.
- A query's probe ciphertext is put in the object store once and every actor receives it by
  reference. Key material (~36 MB) is put once per key id and handed to the actors as a
  reference they resolve only when their own cache misses: it crosses to an actor once per
  key epoch, not per query.
- The driver draws the random block order and rotations of the query (``new_layout``),
  sends each actor its (response position, block, shift) jobs and reassembles the result
  blocks by response position, so :class:`QueryLayout` maps every position back to its row.
- ``should_stop`` is polled while waiting; once it is true the outstanding actor tasks are
  cancelled with ``ray.cancel``; an actor sees it (``is_canceled``) wherever the packed
  kernel checks its ``should_stop`` (between groups of blocks and during the rotations).
- Errors raised in an actor come back as the fedmatch error they were (never a Ray type);
  a lost actor or cluster is :class:`Unavailable`.

This module imports ray at import time; :func:`fedmatch.he.engines.create_engine` imports it
only for ``backend="ray"``, so a local node never loads ray.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import ray
from ray.exceptions import (
    GetTimeoutError,
    RayActorError,
    RayError,
    RayTaskError,
    TaskCancelledError,
)

from fedmatch.errors import (
    ConfigError,
    DeadlineExceeded,
    FedmatchError,
    HEError,
    InvalidInput,
    Unavailable,
)
from fedmatch.he.engine import (
    PackedEngine,
    RowSource,
    SearchOutput,
    blank_rows,
    check_search,
    new_layout,
    packed_exclusions,
    split_for,
    unpack_exclusions,
)
from fedmatch.he.keys import EvaluationKeys, KeyBundle, open_key_bundle
from fedmatch.he.local import local_engine
from fedmatch.he.params import ParamSet, get_param_set

__all__ = ["RayEngine"]

log = logging.getLogger(__name__)

# Key material kept per actor, and key references kept by the driver (~36 MB each).
_KEY_CAPACITY = 8
# How long the actors may take to be placed and started; a cluster without free CPUs would
# otherwise leave the node waiting forever at start.
_START_TIMEOUT_S = 120.0
# How long a cluster address may take to accept a connection at start.
_CONNECT_S = 5.0
# How often the driver looks at the caller's deadline while the actors score, and how long
# it then waits for cancelled tasks to end.
_POLL_S = 0.02
_CANCEL_GRACE_S = 10.0


class _Shard:
    """One actor's share of the register: the rows and encoded diagonals of its blocks, and
    the evaluation keys of recent key ids. Runs one task at a time (Ray's default), so a
    search sees a block either before or after an enrolment, never half-encoded."""

    def __init__(self, params_name: str, dimension: int) -> None:
        # One core per actor (each asks Ray for one CPU); a kernel set compiles here.
        self._engine = local_engine(get_param_set(params_name), dimension, threads=1)
        self._rows: dict[int, npt.NDArray[np.float32]] = {}
        self._blocks: dict[int, list[Any]] = {}
        self._keys: OrderedDict[str, EvaluationKeys] = OrderedDict()

    def ready(self) -> int:
        return os.getpid()

    def key_ids(self) -> list[str]:
        """The key ids whose material this actor holds, least recently used first."""
        return list(self._keys)

    def load(self, shard: dict[int, npt.NDArray[np.float32]], baby_steps: int) -> None:
        # A copy: arrays from the object store are read-only views of shared memory.
        rows = {b: np.array(chunk, dtype=np.float32) for b, chunk in shard.items()}
        encode = self._engine.encode_block_rows
        blocks = {b: encode(chunk, baby_steps) for b, chunk in rows.items()}
        self._rows, self._blocks = rows, blocks

    def append(self, block: int, chunk: npt.NDArray[np.float32], baby_steps: int) -> None:
        old = self._rows.get(block)
        rows = np.array(chunk, dtype=np.float32) if old is None else np.concatenate([old, chunk])
        self._blocks[block] = self._engine.encode_block_rows(rows, baby_steps)
        self._rows[block] = rows

    def erase(self, block: int, offsets: list[int], baby_steps: int) -> None:
        rows = blank_rows(self._rows[block], offsets)
        self._blocks[block] = self._engine.encode_block_rows(rows, baby_steps)
        self._rows[block] = rows

    def _evaluation(self, key_id: str, box: list[Any]) -> EvaluationKeys:
        keys = self._keys.get(key_id)
        if keys is None:
            # The reference is nested in a list, so Ray did not fetch it with the task:
            # it is fetched here, only when this actor does not hold the keys yet.
            bundle: KeyBundle = ray.get(box[0])
            keys = open_key_bundle(bundle).searching_copy()  # not the bundle's bytes again
            self._keys[key_id] = keys
            while len(self._keys) > _KEY_CAPACITY:
                self._keys.popitem(last=False)
        self._keys.move_to_end(key_id)
        return keys

    def search(
        self,
        key_id: str,
        key_box: list[Any],
        probe: bytes,
        threshold: float,
        jobs: list[tuple[int, int, int, bytes | None]],
    ) -> list[tuple[int, bytes]]:
        """Scored result blocks of ``jobs`` (response position, block, shift, packed
        exclusion bits or None), as (response position, ciphertext)."""
        context = ray.get_runtime_context()
        try:
            keys = self._evaluation(key_id, key_box)
            query = self._engine.open_probe(probe)
            per = self._engine.params.block_records
            excluded = [unpack_exclusions(bits, per) for *_, bits in jobs]
            out = self._engine.score(
                keys,
                query,
                threshold,
                [(self._blocks[b], shift) for _, b, shift, _ in jobs],
                context.is_canceled,
                excluded if any(e is not None for e in excluded) else None,
            )
        except FedmatchError:
            raise
        except Exception:  # noqa: BLE001 - never let an internal message leave the actor
            raise Unavailable("a search shard failed") from None
        return [(pos, ct) for (pos, *_), ct in zip(jobs, out, strict=True)]


# One CPU per actor: the scheduler then places at most one scoring actor per core.
_ShardActor = ray.remote(num_cpus=1)(_Shard)


def _domain_error(exc: BaseException) -> FedmatchError:
    """The fedmatch error for what ``ray.get`` raised: the actor's own domain error rebuilt
    as its plain type (the node maps it to the same status as the local engine's), a
    cancelled task as DeadlineExceeded, anything else from Ray as Unavailable."""
    if isinstance(exc, TaskCancelledError):
        return DeadlineExceeded("search stopped: the caller's deadline passed or it cancelled")
    if isinstance(exc, RayTaskError):
        cause = exc.cause
        if isinstance(cause, FedmatchError):
            return type(cause)(str(cause))
        return Unavailable("a search shard failed")
    if isinstance(exc, RayActorError):
        return Unavailable("a search actor ended")
    return Unavailable("the Ray cluster could not run a search shard")


def _check_reachable(address: str) -> None:
    """Unavailable unless something listens at ``address`` (``ray://host:port`` or
    ``host:port``): ``ray.init`` itself retries an unreachable cluster for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=_CONNECT_S):
            pass
    except (OSError, ValueError):
        raise Unavailable(f"no Ray cluster answers at {address!r}") from None


def _check_transport(address: str) -> None:
    """ConfigError for a cluster beyond this machine's loopback without Ray's TLS: the
    register's rows travel to the actors as clear templates (they are what the search
    encodes), so Ray's unencrypted gRPC would undo their encryption at rest."""
    host = address.removeprefix("ray://").rpartition(":")[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False  # a DNS name: another machine, as far as we can tell
    if not loopback and os.environ.get("RAY_USE_TLS", "").lower() not in ("1", "true"):
        raise ConfigError(
            f"node.ray_address {address!r} is beyond loopback: the register's templates would "
            "cross the network in the clear; set RAY_USE_TLS=1 (with RAY_TLS_SERVER_CERT, "
            "RAY_TLS_SERVER_KEY and RAY_TLS_CA_CERT) for the node and the cluster"
        )


def _start_ray(address: str, workers: int) -> bool:
    """Join a Ray runtime unless this process already has one; True if this call started or
    joined it (and so :meth:`RayEngine.close` disconnects, stopping a runtime it started)."""
    if ray.is_initialized():
        return False  # an application (or a test session) that manages Ray itself
    common: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    try:
        if address:
            if address != "auto":  # "auto" finds a local cluster's address, or fails fast
                _check_transport(address)
                _check_reachable(address)
            ray.init(address=address, **common)
        else:
            # A private runtime for this node, on loopback, with a CPU for every actor. Ray
            # reports usage statistics to its vendor unless told not to: a node never does
            # (its processes inherit this; a cluster's own operator sets it at `ray start`).
            os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
            cores = len(os.sched_getaffinity(0))
            ray.init(
                address="local",
                num_cpus=max(workers, cores),
                _node_ip_address="127.0.0.1",
                **common,
            )
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        log.error("Ray runtime at %r failed to start or connect: %s", address or "local", exc)
        raise Unavailable(
            f"could not start or reach the Ray runtime at {address or 'local'!r}"
        ) from None
    return True


class RayEngine:
    """:class:`PackedEngine` semantics across ``workers`` Ray actors (0: one per CPU the
    Ray runtime reports). ``address``: empty starts a private local runtime; ``"auto"`` or
    ``"ray://host:port"`` joins a cluster. A process that already called ``ray.init`` keeps
    its own runtime, and closing the engine leaves it running."""

    def __init__(
        self, params: ParamSet, dimension: int, workers: int = 0, address: str = ""
    ) -> None:
        if workers < 0:
            raise InvalidInput("the Ray engine needs a non-negative actor count")
        self._local = PackedEngine(params, dimension)  # validation only
        self._params = params
        self._dimension = dimension
        # The baby-step/giant-step split of every block (see fedmatch.he.engine), chosen at
        # load for the blocks one actor holds: an actor's blocks share its baby steps.
        self._baby_steps = split_for(params, self._local._dp, 0)
        self._owns_runtime = _start_ray(address, workers)
        self._actors: list[Any] = []
        self._pids: tuple[int, ...] = ()
        # Object-store references of key bundles by key id, most recently used last.
        self._key_refs: OrderedDict[str, Any] = OrderedDict()
        self._size = 0
        self._nblocks = 0
        try:
            resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
            count = workers or max(1, int(resources.get("CPU", 1)))
            self._actors = [
                _ShardActor.options(scheduling_strategy="SPREAD").remote(params.name, dimension)
                for _ in range(count)
            ]
            refs = [actor.ready.remote() for actor in self._actors]
            try:
                self._pids = tuple(ray.get(refs, timeout=_START_TIMEOUT_S))
            except GetTimeoutError:
                raise Unavailable(
                    f"Ray did not start {count} search actors within {_START_TIMEOUT_S:.0f} s "
                    "(each needs one free CPU)"
                ) from None
            except RayError as exc:
                raise _domain_error(exc) from None
        except BaseException:
            self.close()
            raise

    @property
    def params(self) -> ParamSet:
        return self._params

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def size(self) -> int:
        return self._size

    @property
    def workers(self) -> int:
        return len(self._actors)

    @property
    def worker_pids(self) -> tuple[int, ...]:
        """Process ids of the actors (on their own hosts; for local memory accounting)."""
        return self._pids

    def kept_keys(self, keys: EvaluationKeys) -> EvaluationKeys:
        # The workers search: the bundle to send them, the public key for decoy blocks.
        return keys.dispatching_copy()

    def close(self) -> None:
        for actor in self._actors:
            try:
                ray.kill(actor)
            except Exception as exc:  # noqa: BLE001 - closing must go on for the others
                log.warning("could not kill a search actor: %s", type(exc).__name__)
        self._actors = []
        self._key_refs.clear()
        if self._owns_runtime and ray.is_initialized():
            ray.shutdown()
        self._owns_runtime = False

    def _owner(self, block: int) -> Any:
        return self._actors[block % len(self._actors)]

    def _nblocks_for(self, rows: int) -> int:
        return -(-rows // self._params.block_records)

    def _wait(self, refs: Sequence[Any]) -> list[Any]:
        """The results of ``refs``, or the first failure as a fedmatch error."""
        try:
            return list(ray.get(list(refs)))
        except RayError as exc:
            raise _domain_error(exc) from None

    def load(self, templates: npt.NDArray[np.float32]) -> None:
        rows = self._local.check_rows(templates)
        per, nblocks = self._params.block_records, self._nblocks_for(rows.shape[0])
        shards: list[dict[int, npt.NDArray[np.float32]]] = [{} for _ in self._actors]
        for b in range(nblocks):
            shards[b % len(self._actors)][b] = rows[b * per : (b + 1) * per]
        # The model of the engine the actors run (the kernel engine's for a kernel set).
        baby = split_for(self._params, self._local._dp, -(-nblocks // len(self._actors)))
        # Every actor replaces its whole share (an empty one too), in parallel.
        self._wait(
            [actor.load.remote(s, baby) for actor, s in zip(self._actors, shards, strict=True)]
        )
        self._size, self._nblocks, self._baby_steps = int(rows.shape[0]), nblocks, baby

    def append(self, templates: npt.NDArray[np.float32]) -> None:
        new = self._local.check_rows(templates)
        if new.shape[0] == 0:
            return
        per, start, done = self._params.block_records, self._size, 0
        refs = []
        while done < new.shape[0]:  # one call per block the new rows touch
            block, offset = divmod(start + done, per)
            take = min(per - offset, new.shape[0] - done)
            chunk = new[done : done + take]
            refs.append(self._owner(block).append.remote(block, chunk, self._baby_steps))
            done += take
        self._wait(refs)
        self._size += int(new.shape[0])
        self._nblocks = self._nblocks_for(self._size)

    def erase(self, rows: Sequence[int]) -> None:
        if any(not 0 <= int(r) < self._size for r in rows):
            raise InvalidInput("erase names a row outside the register")
        per = self._params.block_records
        by_block: dict[int, list[int]] = {}
        for r in rows:
            block, offset = divmod(int(r), per)
            by_block.setdefault(block, []).append(offset)
        self._wait(
            [
                self._owner(b).erase.remote(b, offsets, self._baby_steps)
                for b, offsets in sorted(by_block.items())
            ]
        )

    def read_rows_from(self, source: RowSource) -> None:
        """Nothing changes: each actor keeps its own blocks' rows, on its own machine, to
        re-encode them there (the node's store is not reachable from a Ray cluster)."""

    def _key_ref(self, keys: EvaluationKeys) -> Any:
        """The object-store reference of ``keys``' bundle, put there once per key id."""
        ref = self._key_refs.get(keys.key_id)
        if ref is None:
            if keys.bundle is None:
                raise HEError("keys without their bundle cannot be handed to the actors")
            ref = ray.put(keys.bundle)
            self._key_refs[keys.key_id] = ref
            while len(self._key_refs) > _KEY_CAPACITY:
                self._key_refs.popitem(last=False)  # the store frees it once unreferenced
        self._key_refs.move_to_end(keys.key_id)
        return ref

    def search(
        self,
        keys: EvaluationKeys,
        probe: bytes,
        threshold: float,
        should_stop: Callable[[], bool],
        exclude: npt.NDArray[np.bool_] | None = None,
    ) -> SearchOutput:
        rows, nblocks = self._size, self._nblocks
        mask = check_search(self._params, keys, threshold, exclude, rows)
        self._local.open_probe(probe)  # refuse a bad probe before any actor works
        bits = packed_exclusions(mask, nblocks, self._params.block_records)
        layout = new_layout(nblocks, rows, self._params.slots)
        probe_ref = ray.put(probe)  # once; every actor reads it from the object store
        key_box = [self._key_ref(keys)]
        refs = []
        for w, actor in enumerate(self._actors):
            jobs = [
                (pos, b, shift, bits[b])
                for pos, (b, shift) in enumerate(zip(layout.order, layout.shifts, strict=True))
                if b % len(self._actors) == w
            ]
            if jobs:
                refs.append(actor.search.remote(keys.key_id, key_box, probe_ref, threshold, jobs))
        results: dict[int, bytes] = {}
        for part in self._gather(refs, should_stop):
            results.update(dict(part))
        return SearchOutput(tuple(results[k] for k in range(nblocks)), layout)

    def _gather(self, refs: list[Any], should_stop: Callable[[], bool]) -> list[Any]:
        """Wait for every task, cancelling all of them once ``should_stop()`` is true."""
        remaining = list(refs)
        while remaining:
            if should_stop():
                for ref in remaining:
                    ray.cancel(ref)
                # The actors stop at their next check. Waiting for that is bounded, so that
                # an unresponsive actor cannot hold the caller; the outcomes are collected
                # so that Ray reports none of them as an unhandled error later.
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=_CANCEL_GRACE_S)
                for ref in ready:
                    try:
                        ray.get(ref)
                    except RayError:
                        pass
                raise DeadlineExceeded(
                    "search stopped: the caller's deadline passed or it cancelled"
                )
            _, remaining = ray.wait(remaining, num_returns=len(remaining), timeout=_POLL_S)
        return self._wait(refs)
