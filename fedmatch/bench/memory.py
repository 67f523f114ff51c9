"""A node's memory per record, by component, for the benchmark JSON (issue 20's row "node
RAM per record, 128-d <= 2 KB").

Two views of the same node:

- ``node_rss_bytes_per_record``: what the operating system charges, the node process's RSS
  growth while its register loads plus each search worker's whole RSS (a worker exists only
  for the register; its interpreter, numba and SEAL are part of the cost);
- ``node_pss_bytes_per_record``: the same with each process's proportional set size, which
  counts a page shared by several processes (the libraries every worker maps: numpy,
  SEAL, LLVM) once in all instead of once per process: the RAM the node really takes;
- what the engine says it holds (``held_bytes``): the encoded register (``register``) and
  the float32 rows kept for re-encoding (``rows``; none in a node, which re-reads them from
  its store). The rest of the RSS (``other``) is the interpreters, libraries, SQLite's page
  cache and allocator slack.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["engine_pids", "node_memory", "pss_bytes", "rss_bytes"]


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
    """The processes an engine runs its blocks in, besides this one."""
    procs = getattr(engine, "_procs", [])
    # The Ray engine's actors (their processes are on this machine when its runtime is).
    ray_pids = [int(p) for p in getattr(engine, "worker_pids", ())]
    return [int(p.pid) for p in procs if p.pid is not None] + ray_pids


def node_memory(
    engine: object, process_growth: int, records: int, pss_growth: int | None = None
) -> dict[str, Any]:
    """The JSON fields of a node's memory: per record, the RSS (``process_growth`` of the
    node process plus its workers' whole RSS), the PSS likewise (``pss_growth`` of the node
    process, when measured) and what the engine holds, by kind."""
    pids = engine_pids(engine)
    workers = [rss_bytes(p) for p in pids]
    total = process_growth + sum(workers)
    shares = [pss_bytes(p) for p in pids]
    held_bytes = getattr(engine, "held_bytes", None)
    held: dict[str, int] = held_bytes() if held_bytes is not None else {}
    per = max(records, 1)
    out: dict[str, Any] = {
        "node_rss_bytes_per_record": round(total / per, 1),
        "node_rss_parts_bytes_per_record": {
            "node_process_growth": round(process_growth / per, 1),
            "search_workers": round(sum(workers) / per, 1),
        },
    }
    if pss_growth is not None and all(share is not None for share in shares):
        pss = pss_growth + sum(share for share in shares if share is not None)
        out["node_pss_bytes_per_record"] = round(pss / per, 1)
    if held:
        out["register_bytes_per_record"] = round(held["register"] / per, 1)
        out["engine_rows_bytes_per_record"] = round(held["rows"] / per, 1)
        out["other_rss_bytes_per_record"] = round((total - sum(held.values())) / per, 1)
    return out
