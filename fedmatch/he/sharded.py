"""The packed engine on every core: one worker process per shard of blocks.

tenseal holds the GIL, so threads cannot score in parallel; processes can. Block ``b`` lives
in worker ``b % W``, which encodes it (in parallel at load) and keeps its plaintexts; the
main process keeps the rows (to route re-encoding on enrolment and erasure: a node tells it to
read them from its store instead, :meth:`ShardedEngine.read_rows_from`) and the per-query
layout.
A query is sent to every worker with its share of (response position, block, shift) jobs;
each worker computes the query's baby-step rotations itself (in parallel) and scores its
blocks; with a kernel parameter set the workers of a query compute one share of the
rotations each, into one shared stack, and the probe's well-formedness terms and norm
check once between them (:mod:`fedmatch.he.rotshare`). The
baby-step/giant-step split (:mod:`fedmatch.he.engine`) is chosen from the blocks per
worker when the register is loaded, and sent with every encoding request. With a
kernel parameter set each worker runs :class:`fedmatch.he.kernel_engine.KernelEngine` on its
share of the cores (compiling the kernel when it starts).
A query's row exclusions travel with the jobs, as packed bits of the blocks that have an
excluded row (1 KB per such block; nothing for the others). Key material reaches a
worker once per key id. A search stops promptly when the
caller's deadline passes: the main process raises a shared cancel mark that workers check
between blocks and every 16 rotations.

One process is started with the ``spawn`` method (a node already runs gRPC threads, and
forking a process with live gRPC state is unsafe): it builds the engine, compiling a kernel
set's kernel once, and forks the workers from itself (:func:`_zygote_main`). The workers
share what it built, page for page until one writes it: with the kernel set that saves each
worker ~100 MB of compiled code and compiler state and ~10 s of a core at start. A worker
on one core runs the serial kernel, which needs no threading layer; on more, numba's own
work queue (GNU OpenMP terminates a forked child). Each worker's random stream refills
under its own key after the fork (:mod:`fedmatch.he.rng`).
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import signal
from collections import OrderedDict
from collections.abc import Callable, Sequence
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np
import numpy.typing as npt

from fedmatch.errors import DeadlineExceeded, FedmatchError, HEError, InvalidInput, Unavailable
from fedmatch.he.engine import (
    PackedBase,
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
from fedmatch.he.keys import EvaluationKeys, open_key_bundle
from fedmatch.he.local import local_engine
from fedmatch.he.params import ParamSet, get_param_set
from fedmatch.he.rotshare import RotationShare, SharedStack
from fedmatch.he.rows import KeptRows
from fedmatch.heap import release_free_heap

__all__ = ["ShardedEngine", "default_workers"]

# Key material kept per worker (~36 MB each for the default set).
_WORKER_KEY_CAPACITY = 8


def _cancelled(cancel: Any, seq: int) -> Callable[[], bool]:
    """True once the main process has marked search ``seq`` (or a later one) cancelled."""
    return lambda: bool(cancel.value >= seq)


def _zygote_main(
    conns: list[mpc.Connection],
    cancel: Any,
    params_name: str,
    dimension: int,
    threads: int,
    stack: tuple[str, str, str] | None = None,
) -> None:
    """Build (and for a kernel set compile) the workers' engine once, then fork one worker
    per connection and wait for them: the workers share the compiled code and everything
    else built here (copy-on-write pages) instead of each building its own. ``threads``:
    the cores each worker's product kernel may use; ``stack``: the names of the shared
    rotation stack's segments, if the workers share the rotations."""
    # Ctrl-C at a terminal reaches the whole process group: the node decides when its
    # workers stop (a stop message, or the end of its pipes when it exits), not the signal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    params = get_param_set(params_name)
    if params.kernel:
        # A forked child of a process that loaded GNU OpenMP (numba's default layer here)
        # is terminated by it; numba's own work queue resets itself in a forked child
        # (workers on one core run the serial kernel, which loads no threading layer).
        import numba

        numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]  # set at import
    engine = local_engine(params, dimension, threads)
    # Not copied into every worker: the build's freed heap; and what the collector would
    # otherwise touch in each worker (every object here, making its page the worker's own).
    release_free_heap()
    gc.freeze()
    children = []
    for me, conn in enumerate(conns):
        pid = os.fork()
        if pid == 0:  # the worker: its own connection only, and never back into this code
            code = 1
            try:
                for other in conns:
                    if other is not conn:
                        other.close()
                _worker_main(conn, cancel, engine, dimension, me, len(conns), stack)
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    for conn in conns:
        conn.close()  # each worker's end lives in the worker alone: its EOF is the main's
    for pid in children:
        os.waitpid(pid, 0)


def _worker_main(
    conn: mpc.Connection,
    cancel: Any,
    engine: PackedBase[Any],
    dimension: int,
    me: int = 0,
    workers: int = 1,
    stack: tuple[str, str, str] | None = None,
) -> None:
    """A worker's loop: say it is ready (its pid), then encode its blocks, cache keys and
    score its share of each query with ``engine`` (this worker's copy). ``stack``: as for
    :func:`_zygote_main` (worker ``me`` of ``workers``)."""
    conn.send(("ready", os.getpid()))
    blocks: dict[int, list[Any]] = {}
    keys: OrderedDict[str, EvaluationKeys] = OrderedDict()
    # Attached for the worker's life; the main process owns and unlinks them (as for the
    # encode segment below, attaching registers the names with the shared tracker again).
    segments = None
    if stack is not None:
        segments = (
            SharedMemory(name=stack[0]),
            SharedMemory(name=stack[1]),
            SharedMemory(name=stack[2]),
        )
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        kind = msg[0]
        try:
            if kind == "stop":
                return
            if kind == "encode":
                _, shm_name, n_rows, indices, baby = msg
                blocks.clear()  # a load replaces the whole register
                # The main process owns (and unlinks) the segment. A spawned worker shares
                # the main process's resource tracker, so attaching registers the name a
                # second time in the same set (harmless) and the main process's unlink
                # unregisters it once. Unregistering here as well made the tracker print a
                # KeyError traceback at every node start (issue 19 item 9).
                shm = SharedMemory(name=shm_name)
                try:
                    rows = np.ndarray((n_rows, dimension), dtype=np.float32, buffer=shm.buf)
                    per = engine.params.block_records
                    for b in indices:
                        blocks[b] = engine.encode_block_rows(rows[b * per : (b + 1) * per], baby)
                    del rows
                finally:
                    shm.close()
                # The encoder's temporaries are freed: give their pages back to the system.
                release_free_heap()
                conn.send(("ok",))
            elif kind == "encode_rows":
                _, index, chunk, baby = msg
                blocks[index] = engine.encode_block_rows(chunk, baby)
                conn.send(("ok",))
            elif kind == "held":
                conn.send(("held", sum(engine.block_nbytes(b) for b in blocks.values())))
            elif kind == "keys":
                _, key_id, bundle = msg
                # The loaded keys only: the bundle's bytes would double what each worker
                # holds per requester key.
                keys[key_id] = open_key_bundle(bundle).searching_copy()
                del bundle, msg
                while len(keys) > _WORKER_KEY_CAPACITY:
                    keys.popitem(last=False)
                conn.send(("ok",))
            elif kind == "search":
                _, seq, key_id, probe, threshold, jobs, peers, baby = msg
                share = None
                if segments is not None and len(peers) > 1:
                    share = RotationShare(*segments, seq, peers, me, workers, baby)
                try:
                    evaluation = keys[key_id]
                    keys.move_to_end(key_id)
                    query = engine.open_probe(probe)
                    per = engine.params.block_records
                    excluded = [unpack_exclusions(bits, per) for *_, bits in jobs]
                    out = engine.score(
                        evaluation,
                        query,
                        threshold,
                        [(blocks[b], shift) for _, b, shift, _ in jobs],
                        _cancelled(cancel, seq),
                        excluded if any(e is not None for e in excluded) else None,
                        share,
                    )
                except BaseException:
                    if share is not None:
                        share.fail()  # no peer waits for a share that will not come
                    raise
                results = [(pos, ct) for (pos, *_), ct in zip(jobs, out, strict=True)]
                conn.send(("result", seq, results))
        except DeadlineExceeded:
            conn.send(("cancelled",))
        except FedmatchError as exc:
            conn.send(("error", type(exc).__name__, str(exc)))
        except Exception as exc:  # noqa: BLE001 - report, never die on one bad request
            conn.send(("error", type(exc).__name__, "worker failed"))


class ShardedEngine:
    """:class:`PackedEngine` semantics across ``workers`` processes."""

    def __init__(self, params: ParamSet, dimension: int, workers: int) -> None:
        self._local = PackedEngine(params, dimension)  # validation and layout only
        self._params = params
        self._dimension = dimension
        ctx = mp.get_context("spawn")
        self._cancel = ctx.Value("q", 0)
        self._seq = 0
        self._conns: list[mpc.Connection] = []
        self._procs: list[Any] = []
        # Mirrors of each worker's key cache: same capacity, same LRU order, so the main
        # process always knows which key ids a worker still holds.
        self._key_ids: list[OrderedDict[str, None]] = []
        # The cores split between the workers, for a kernel set's products.
        threads = max(1, default_workers() // workers)
        # A kernel set's workers share the query's rotations (their words are what its
        # kernel reads; a SEAL product needs the ciphertexts themselves).
        sharing = params.kernel and workers > 1
        self._stack = SharedStack(params, dimension, workers) if sharing else None
        names = None if self._stack is None else self._stack.names
        ends = []
        for _ in range(workers):
            parent, child = ctx.Pipe()
            self._conns.append(parent)
            ends.append(child)
            self._key_ids.append(OrderedDict())
        # One process builds the engine and forks the workers (see _zygote_main); each
        # worker says it is ready with its pid (read before the first request to it).
        zygote = ctx.Process(
            target=_zygote_main,
            args=(ends, self._cancel, params.name, dimension, threads, names),
            daemon=True,
        )
        zygote.start()
        for child in ends:
            child.close()
        self._procs.append(zygote)
        self._pids: list[int | None] = [None] * workers
        # As PackedBase keeps them: the rows until the owner names their source.
        self._rows = KeptRows(dimension, self._local.check_rows)
        self._size = 0
        self._nblocks = 0
        self._baby_steps = split_for(params, self._local._dp, 0)

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
        return len(self._conns)

    @property
    def worker_pids(self) -> tuple[int, ...]:
        """The workers' process ids (waiting for any not ready yet); the process that
        forked them is ``_procs[0]``."""
        return tuple(self._ready(w) for w in range(len(self._conns)))

    def _ready(self, worker: int) -> int:
        """``worker``'s pid, once it has said it is ready (its first message)."""
        pid = self._pids[worker]
        if pid is None:
            try:
                hello = self._conns[worker].recv()
            except (EOFError, OSError):
                raise Unavailable("a search worker process ended") from None
            if hello[0] != "ready":
                raise Unavailable("a search worker did not start")
            pid = self._pids[worker] = int(hello[1])
        return pid

    def _send(self, worker: int, msg: tuple[Any, ...]) -> None:
        self._ready(worker)
        try:
            self._conns[worker].send(msg)
        except OSError:  # its end is closed: the worker is gone
            raise Unavailable("a search worker process ended") from None

    def kept_keys(self, keys: EvaluationKeys) -> EvaluationKeys:
        # The workers search: the bundle to send them, the public key for decoy blocks.
        return keys.dispatching_copy()

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(("stop",))
            except (OSError, ValueError):
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        for conn in self._conns:
            conn.close()
        self._conns.clear()
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def read_rows_from(self, source: RowSource) -> None:
        self._rows.read_from(source)

    def held_bytes(self) -> dict[str, int]:
        """As :meth:`PackedBase.held_bytes`: the workers' encoded blocks, the rows here."""
        register = 0
        for w in range(len(self._conns)):
            self._send(w, ("held",))
        for w in range(len(self._conns)):
            try:
                reply = self._conns[w].recv()
            except (EOFError, OSError):
                raise Unavailable("a search worker process ended") from None
            if reply[0] != "held":
                raise _worker_error(reply)
            register += int(reply[1])
        return {"register": register, "rows": self._rows.nbytes}

    def _owner(self, block: int) -> int:
        return block % len(self._conns)

    def _call(self, worker: int, msg: tuple[Any, ...]) -> None:
        self._send(worker, msg)
        self._expect_ok(worker)

    def _expect_ok(self, worker: int) -> None:
        try:
            reply = self._conns[worker].recv()
        except (EOFError, OSError):
            raise Unavailable("a search worker process ended") from None
        if reply[0] == "error":
            raise _worker_error(reply)

    def _nblocks_for(self, rows: int) -> int:
        return -(-rows // self._params.block_records)

    def load(self, templates: npt.NDArray[np.float32]) -> None:
        rows = np.ascontiguousarray(self._local.check_rows(templates))
        nblocks = self._nblocks_for(rows.shape[0])
        # The split for each worker's share of the blocks; a kernel set's workers share the
        # baby steps (fedmatch.he.rotshare), and its cost model is the kernel engine's.
        per_worker = -(-nblocks // len(self._conns))
        sharers = len(self._conns) if self._stack is not None else 1
        baby = split_for(self._params, self._local._dp, per_worker, sharers)
        shm = SharedMemory(create=True, size=max(rows.nbytes, 1))
        try:
            view = np.ndarray(rows.shape, dtype=np.float32, buffer=shm.buf)
            view[:] = rows
            del view
            busy = []
            for w in range(len(self._conns)):
                mine = [b for b in range(nblocks) if self._owner(b) == w]
                self._send(w, ("encode", shm.name, rows.shape[0], mine, baby))
                busy.append(w)
            for w in busy:  # the workers encode their shards in parallel
                self._expect_ok(w)
        finally:
            shm.close()
            shm.unlink()
        self._rows.replace(rows)
        self._size, self._nblocks, self._baby_steps = len(rows), nblocks, baby

    def append(self, templates: npt.NDArray[np.float32]) -> None:
        new = self._local.check_rows(templates)
        if new.shape[0] == 0:
            return
        per, size = self._params.block_records, self.size
        first = size // per
        # The rows from the first block the new ones touch (its older rows are re-encoded).
        tail = np.concatenate([self._rows.read(first * per, size), new])
        nblocks = self._nblocks_for(size + len(new))
        # Only the blocks the new rows touch, with the split chosen at load (a worker's
        # blocks must share one split to share its baby steps).
        for b in range(first, nblocks):
            chunk = tail[(b - first) * per : (b - first + 1) * per]
            self._call(self._owner(b), ("encode_rows", b, chunk, self._baby_steps))
        self._rows.extend(new)
        self._size, self._nblocks = size + len(new), nblocks

    def erase(self, rows: Sequence[int]) -> None:
        if any(not 0 <= r < self.size for r in rows):
            raise InvalidInput("erase names a row outside the register")
        per = self._params.block_records
        for b in sorted({r // per for r in rows}):  # only the blocks holding erased rows
            start = b * per
            chunk = blank_rows(
                self._rows.read(start, min(start + per, self.size)),
                [r - start for r in rows if start <= r < start + per],
            )
            self._call(self._owner(b), ("encode_rows", b, chunk, self._baby_steps))
        self._rows.blank(rows)

    def _ensure_keys(self, keys: EvaluationKeys) -> None:
        for w, known in enumerate(self._key_ids):
            if keys.key_id in known:
                known.move_to_end(keys.key_id)  # as the worker does when it searches
                continue
            bundle = keys.bundle
            if bundle is None:
                raise HEError("keys without their bundle cannot be handed to the workers")
            self._call(w, ("keys", keys.key_id, bundle))
            known[keys.key_id] = None
            while len(known) > _WORKER_KEY_CAPACITY:
                known.popitem(last=False)

    def search(
        self,
        keys: EvaluationKeys,
        probe: bytes,
        threshold: float,
        should_stop: Callable[[], bool],
        exclude: npt.NDArray[np.bool_] | None = None,
    ) -> SearchOutput:
        rows, nblocks = self.size, self._nblocks
        mask = check_search(self._params, keys, threshold, exclude, rows)
        self._local.open_probe(probe)  # refuse a bad probe before waking any worker
        self._ensure_keys(keys)
        bits = packed_exclusions(mask, nblocks, self._params.block_records)
        layout = new_layout(nblocks, rows, self._params.slots)
        self._seq += 1
        seq = self._seq
        pending: dict[int, mpc.Connection] = {}
        shares: dict[int, list[Any]] = {}
        for pos, (b, shift) in enumerate(zip(layout.order, layout.shifts, strict=True)):
            shares.setdefault(self._owner(b), []).append((pos, b, shift, bits[b]))
        peers = sorted(shares)  # the workers of this query, who share its rotations
        for w, jobs in shares.items():
            msg = ("search", seq, keys.key_id, probe, threshold, jobs, peers, self._baby_steps)
            self._send(w, msg)
            pending[w] = self._conns[w]
        results: dict[int, bytes] = {}
        stopped = False
        failure: FedmatchError | None = None
        while pending:
            if not stopped and should_stop():
                self._cancel.value = seq
                stopped = True
            for ready in mpc.wait(list(pending.values()), timeout=0.02):
                w = next(k for k, c in pending.items() if c is ready)
                conn = pending[w]
                try:
                    reply = conn.recv()
                except (EOFError, OSError):
                    failure = Unavailable("a search worker process ended")
                    del pending[w]
                    continue
                del pending[w]
                if reply[0] == "result":
                    results.update(dict(reply[2]))
                elif reply[0] == "error":
                    failure = _worker_error(reply)
        if stopped:
            raise DeadlineExceeded("search stopped: the caller's deadline passed or it cancelled")
        if failure is not None:
            raise failure
        return SearchOutput(tuple(results[k] for k in range(nblocks)), layout)


def _worker_error(reply: tuple[Any, ...]) -> FedmatchError:
    # Rebuild the domain error a worker raised, so the node maps it to the same status.
    import fedmatch.errors as errors

    cls = getattr(errors, str(reply[1]), None)
    if isinstance(cls, type) and issubclass(cls, FedmatchError):
        return cls(str(reply[2]))
    return Unavailable("a search worker failed")


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))
