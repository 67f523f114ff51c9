"""A node's memory per record, by component, for the benchmark JSON (issue 20's row "node
RAM per record, 128-d <= 2 KB").

The node is sampled three times (:class:`NodeSample`): its engine started and ready (search
workers compiled, no register: ``ready``), its register loaded (``loaded``) and while it
serves, after the timed queries (``serving``: one requester's keys registered, every
worker's search working memory touched). Each sample is the node process's growth since the
bench's baseline plus each search worker's whole set, in two views:

- RSS, what the operating system charges (a page two workers map counts twice);
- PSS, the proportional set size, which counts a page shared by several processes (the
  libraries every worker maps: numpy, SEAL, LLVM) once in all: the RAM the node really takes.

The JSON gives ``node_pss_bytes_per_record`` (and RSS) at ``serving`` over the records: the
whole node, its fixed part (interpreters, libraries, compiled kernels, keys) included;
``node_marginal_pss_bytes_per_record``, ``loaded - ready`` over the records: what each
record adds (the register and the row ids, categories and marks beside it); the three
samples in MB; and what the engine says it holds (``held_bytes``): the encoded register
(``register``) and the float32 rows kept for re-encoding (``rows``; none in a node, which
re-reads them from its store).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = ["NodeSample", "engine_pids", "node_memory", "pss_bytes", "rss_bytes", "sample"]


def rss_bytes(pid: int | str = "self") -> int:
    """The resident set of process ``pid`` (this one by default), in bytes."""
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def pss_bytes(pid: int | str = "self") -> int | None:
    """The proportional set size of process ``pid``, in bytes; None where the kernel has no
    ``smaps_rollup`` (Linux before 4.14)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        return None
    return None


def engine_pids(engine: object) -> list[int]:
    """The processes an engine runs its blocks in, besides this one: the sharded engine's
    workers and the process that forked them, the Ray engine's actors (their processes are
    on this machine when its runtime is)."""
    procs = getattr(engine, "_procs", [])
    workers = [int(p) for p in getattr(engine, "worker_pids", ())]
    return [int(p.pid) for p in procs if p.pid is not None] + workers


@dataclass(frozen=True)
class NodeSample:
    """The node's memory at one moment: the node process's growth since a baseline and its
    search workers' whole sets, in bytes (PSS None where the kernel cannot tell it)."""

    main_rss: int
    main_pss: int | None
    workers_rss: int
    workers_pss: int | None

    @property
    def rss(self) -> int:
        return self.main_rss + self.workers_rss

    @property
    def pss(self) -> int | None:
        if self.main_pss is None or self.workers_pss is None:
            return None
        return self.main_pss + self.workers_pss


def sample(engine: object, main_rss: int, main_pss: int | None) -> NodeSample:
    """``engine``'s workers measured now, with the node process's growth as given."""
    pids = engine_pids(engine)
    shares = [pss_bytes(p) for p in pids]
    workers_pss = None if any(s is None for s in shares) else sum(s or 0 for s in shares)
    return NodeSample(main_rss, main_pss, sum(rss_bytes(p) for p in pids), workers_pss)


def node_memory(
    engine: object, records: int, ready: NodeSample, loaded: NodeSample, serving: NodeSample
) -> dict[str, Any]:
    """The JSON fields of a node's memory (see the module's doc)."""
    held_bytes = getattr(engine, "held_bytes", None)
    held: dict[str, int] = held_bytes() if held_bytes is not None else {}
    per = max(records, 1)
    mb = 1024 * 1024
    out: dict[str, Any] = {
        "node_rss_bytes_per_record": round(serving.rss / per, 1),
        "node_marginal_rss_bytes_per_record": round((loaded.rss - ready.rss) / per, 1),
        "node_rss_mb": {
            "ready": round(ready.rss / mb, 1),
            "loaded": round(loaded.rss / mb, 1),
            "serving": round(serving.rss / mb, 1),
            "serving_workers": round(serving.workers_rss / mb, 1),
        },
    }
    pss = (ready.pss, loaded.pss, serving.pss)
    if all(value is not None for value in pss):
        ready_pss, loaded_pss, serving_pss = (value or 0 for value in pss)
        out["node_pss_bytes_per_record"] = round(serving_pss / per, 1)
        out["node_marginal_pss_bytes_per_record"] = round((loaded_pss - ready_pss) / per, 1)
        out["node_pss_mb"] = {
            "ready": round(ready_pss / mb, 1),
            "loaded": round(loaded_pss / mb, 1),
            "serving": round(serving_pss / mb, 1),
        }
    if held:
        out["register_bytes_per_record"] = round(held["register"] / per, 1)
        out["engine_rows_bytes_per_record"] = round(held["rows"] / per, 1)
    return out
