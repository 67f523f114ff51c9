"""``fedmatch bench flood``: honest lookups while a hostile member state floods the federation.

On a federation of real processes over mutual TLS (:mod:`fedmatch.bench.cluster`, as
``bench federation`` builds it: K nodes and the coordinator, registers of N synthetic
records), one honest state (the last of the K, FR for three) looks up random probes
through the coordinator, one every ``honest_interval_s`` seconds, first alone (the quiet
phase), then while F flooder processes (:mod:`fedmatch.bench.flood_worker`) act as the
hostile state (DE) with its valid certificates and throw every attack of
:mod:`fedmatch.bench.attacks` at the coordinator and the nodes (the flood phase).

The nodes apply their default per-state search rate (120 a minute) and key registration
quota, the coordinator its shares: what a deployed federation would. It prints one JSON
object: the honest p50/p95 in each phase and their ratio (issue 21's target: the p50 under
the flood at most twice the quiet one), the honest errors (there must be none), per attack
the attempts and how they ended by gRPC status, each server's RSS before, during and after
the flood and its CPU in each phase (where the flood's cost lands), the flooders' own CPU,
and the load average (the machine is shared: a busy machine slows both phases).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from fedmatch.bench.cluster import (
    NodePolicy,
    Sampler,
    child_env,
    cpu_seconds,
    mb,
    pct,
    start_federation,
    status,
)
from fedmatch.bench.federation import (
    LEGAL_BASIS,
    STATES,
    Outcome,
    Probe,
    bench_experts,
    bench_requester,
    prepare_registers,
    provision_parties,
    timed_lookup,
)
from fedmatch.demo.synthetic import unit_vectors
from fedmatch.domain import Purpose
from fedmatch.errors import InvalidInput
from fedmatch.ops.subprocs import fedmatch_process

__all__ = ["bench_flood"]

HOSTILE = STATES[0]
TARGET_RATIO = 2.0
# Key pairs the hostile state makes (~1.1 s each): n pairs mix into n**3 fresh bundles,
# more than its quota lets through in a run (fedmatch.bench.attacks.key_bundles).
_KEY_PAIRS = 3
_READY_TIMEOUT_S = 600.0
_DONE_GRACE_S = 200.0
# The deadline of an honest lookup: one that takes longer counts as an error.
_HONEST_TIMEOUT_S = 60.0


def _honest(
    requester: Any,
    experts: list[Any],
    rng: np.random.Generator,
    dimension: int,
    seconds: float,
    interval: float,
) -> list[Outcome]:
    """Lookups of random probes, one every ``interval`` s (at once when one took longer);
    the rare chance hit is confirmed by ``experts`` and resolved, untimed."""
    out: list[Outcome] = []
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        due = start + len(out) * interval
        time.sleep(max(0.0, due - time.monotonic()))
        probe = Probe(unit_vectors(rng, 1, dimension)[0], genuine=False)
        out.append(timed_lookup(requester, experts, probe, _HONEST_TIMEOUT_S))
    return out


def _phase(outcomes: list[Outcome], seconds: float) -> dict[str, Any]:
    latencies = [o.latency_s for o in outcomes if not o.errors]
    errors = Counter(e for o in outcomes for e in o.errors)

    def p50_of(values: list[float]) -> float | None:
        return round(statistics.median(values), 1) if values else None

    return {
        "seconds": round(seconds, 1),
        "lookups": len(outcomes),
        "errors": {"count": sum(errors.values()), "kinds": dict(sorted(errors.items()))},
        "p50_s": round(statistics.median(latencies), 4) if latencies else None,
        "p95_s": pct(latencies, 95) if latencies else None,
        "max_s": round(max(latencies), 4) if latencies else None,
        # Where an honest lookup's time goes (medians): the requester's own parts, and
        # each node's search as the coordinator timed it.
        "parts_ms_p50": {
            k: p50_of([o.timings_ms[f"{k}_ms"] for o in outcomes if f"{k}_ms" in o.timings_ms])
            for k in ("federation", "encrypt", "lookup", "decrypt")
        },
        "node_call_ms_p50": p50_of([ms for o in outcomes if not o.errors for ms in o.node_ms]),
    }


def _hostile_keys(workdir: Path) -> tuple[Path, list[Path]]:
    """The hostile state's key pairs: the first one's private file (its lookups), and the
    public bundle of each (what its registrations mix)."""
    from fedmatch.he.keypair import RequesterKeys
    from fedmatch.protocol.wire import key_bundle_to_pb
    from fedmatch.requester.keyfile import save_keys

    pairs = [RequesterKeys.generate() for _ in range(_KEY_PAIRS)]
    private = workdir / f"keys-{HOSTILE}.key"
    save_keys(pairs[0], private)
    public = []
    for i, keys in enumerate(pairs):
        path = workdir / f"keys-{HOSTILE}-{i}.pb"
        path.write_bytes(key_bundle_to_pb(keys.public_bundle()).SerializeToString())
        public.append(path)
    return private, public


def _merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The flooders' tallies added up per attack."""
    out: dict[str, Any] = {}
    for result in results:
        for name, tally in result["attacks"].items():
            into = out.setdefault(
                name, {"attempts": 0, "outcomes": Counter(), "resource_exhausted_by": Counter()}
            )
            into["attempts"] += tally["attempts"]
            into["outcomes"].update(tally["outcomes"])
            into["resource_exhausted_by"].update(tally["resource_exhausted_by"])
    for tally in out.values():
        tally["outcomes"] = dict(sorted(tally["outcomes"].items()))
        tally["resource_exhausted_by"] = dict(sorted(tally["resource_exhausted_by"].items()))
    return out


def _wait_files(paths: list[Path], procs: list[Any], timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None and proc.returncode != 0:
                tail = log.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"a flooder exited with code {proc.returncode}: {tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"flooders did not write {[p.name for p in paths]} in time")
        time.sleep(0.05)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def bench_flood(
    nodes: int = 3,
    records_per_node: int = 20_000,
    quiet_s: float = 60.0,
    flood_s: float = 60.0,
    flooders: int = 2,
    honest_interval_s: float = 1.0,
    lookup_threads: int = 12,
    registration_threads: int = 4,
    flooder_nice: int = 0,
    dimension: int = 128,
    registration_burst: int | None = None,
    threshold: float = 0.45,
    workdir: Path | None = None,
    seed: int = 11,
) -> dict[str, Any]:
    """``lookup_threads`` and ``registration_threads`` are the hostile state's, over all
    flooders (12 lookups are beyond its share of 8 concurrent calls at the coordinator).
    ``flooder_nice`` (0 to 19) lowers the flooders' CPU priority: on one machine the
    attacker's own work takes the servers' cores, which a real attacker's does not.
    ``registration_burst`` replaces the federation's burst of new key bundles per state
    (10) at every party, e.g. to reach the quota within a short flood."""
    if not 2 <= nodes <= len(STATES):
        raise InvalidInput(f"--nodes must be between 2 and {len(STATES)}")
    if min(records_per_node, flooders) < 1 or min(quiet_s, flood_s, honest_interval_s) <= 0:
        raise InvalidInput("records, flooders, durations and the interval must be positive")
    if lookup_threads < 0 or registration_threads < 0:
        raise InvalidInput("the flooders' thread counts cannot be negative")
    if not 0 <= flooder_nice <= 19:
        raise InvalidInput("--flooder-nice must be between 0 and 19")
    if registration_burst is not None and registration_burst < 1:
        raise InvalidInput("--registration-burst must be at least 1")
    from node.config import NodeConfig
    from node.policy import SearchPolicy

    states = list(STATES[:nodes])
    honest = states[-1]
    rng = np.random.default_rng(seed)
    setup: dict[str, float] = {}
    started = time.perf_counter()
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fedmatch-fl-")))
        workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        requesters = [HOSTILE, honest]
        parties = provision_parties(workdir / "pki", states, requesters)
        prepare_registers(workdir, states, records_per_node, dimension, {}, parties)
        setup["pki_and_seed"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        defaults = SearchPolicy()
        running = start_federation(
            stack, workdir, parties, states, dimension, threshold,
            policy=NodePolicy(defaults.requests_per_minute, defaults.daily_quota),
            registration_burst=registration_burst,
        )  # fmt: skip
        setup["start_processes"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        private, public = _hostile_keys(workdir)
        setup["hostile_keys"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        requester = bench_requester(parties, honest, running.coordinator)
        stack.callback(requester.close)
        requester.register_keys(
            requester.header(Purpose.ASYLUM_DUBLIN, LEGAL_BASIS, "BENCH-KEYS"), timeout=900.0
        )
        experts = bench_experts(parties, honest)
        warm = timed_lookup(
            requester, experts, Probe(unit_vectors(rng, 1, dimension)[0], False), 300.0
        )
        setup["honest_keys_and_warmup"] = time.perf_counter() - t0
        servers = running.pids
        load: dict[str, list[float]] = {"quiet": _load()}

        # The quiet phase: the honest state alone.
        cpu_q0 = {n: cpu_seconds(p) for n, p in servers.items()}
        rss_q0 = {n: status(p)["VmRSS"] for n, p in servers.items()}
        t0 = time.monotonic()
        quiet = _honest(requester, experts, rng, dimension, quiet_s, honest_interval_s)
        quiet_wall = time.monotonic() - t0
        cpu_q1 = {n: cpu_seconds(p) for n, p in servers.items()}

        # The flooders: started, ready (channels open, keys loaded), then all go at once.
        procs, logs, ready, results = [], [], [], []
        for i in range(flooders):
            spec_path = workdir / f"flooder-{i}.json"
            ready.append(workdir / f"flooder-{i}.ready")
            results.append(workdir / f"flooder-{i}.result.json")
            for path in (ready[-1], results[-1]):
                path.unlink(missing_ok=True)
            spec = {
                "index": i,
                "duration_s": flood_s,
                "pki": str(workdir / "pki"),
                "states": states,
                "requesters": requesters,
                "hostile": HOSTILE,
                "coordinator": running.coordinator,
                "nodes": running.addresses,
                "dimension": dimension,
                "lookup_keys": str(private),
                "bundles": [str(p) for p in public],
                # Split over the flooders, the first ones taking the remainder.
                "lookup_threads": lookup_threads // flooders + (i < lookup_threads % flooders),
                "registration_threads": registration_threads // flooders
                + (i < registration_threads % flooders),
                "nice": flooder_nice,
                "ready": str(ready[-1]),
                "go": str(workdir / "flood.go"),
                "result": str(results[-1]),
            }
            spec_path.write_text(json.dumps(spec))
            logs.append(workdir / f"flooder-{i}.log")
            procs.append(
                stack.enter_context(
                    fedmatch_process(
                        [str(spec_path)],
                        logs[-1],
                        env=child_env(),
                        stop_timeout=10.0,
                        module="fedmatch.bench.flood_worker",
                    )
                )
            )
        (workdir / "flood.go").unlink(missing_ok=True)
        _wait_files(ready, procs, _READY_TIMEOUT_S, logs)
        load["flood"] = _load()
        rss_f0 = {n: status(p)["VmRSS"] for n, p in servers.items()}
        cpu_f0 = {n: cpu_seconds(p) for n, p in servers.items()}
        (workdir / "flood.go").write_text("go")
        t0 = time.monotonic()
        with Sampler(servers) as sampler:
            flood = _honest(requester, experts, rng, dimension, flood_s, honest_interval_s)
            flood_wall = time.monotonic() - t0
            cpu_f1 = {n: cpu_seconds(p) for n, p in servers.items()}
            load["flood_end"] = _load()
            _wait_files(results, procs, flood_s + _DONE_GRACE_S, logs)
        rss_after = {n: status(p)["VmRSS"] for n, p in servers.items()}
        hwm = {n: status(p)["VmHWM"] for n, p in servers.items()}
        flooded = [json.loads(p.read_text()) for p in results]

    q, f = _phase(quiet, quiet_wall), _phase(flood, flood_wall)
    ratio = round(f["p50_s"] / q["p50_s"], 3) if q["p50_s"] and f["p50_s"] else None
    encrypt = q["parts_ms_p50"]["encrypt"], f["parts_ms_p50"]["encrypt"]
    honest_errors = Counter(e for o in [warm, *quiet, *flood] for e in o.errors)
    return {
        "bench": "flood",
        "nodes": nodes,
        "records_per_node": records_per_node,
        "dim": dimension,
        "cpu_count": len(os.sched_getaffinity(0)),
        "transport": "mtls",
        "honest_state": honest,
        "hostile_state": HOSTILE,
        "flooders": flooders,
        "flooder_threads": {"lookups": lookup_threads, "key_registrations": registration_threads},
        "flooder_nice": flooder_nice,
        "honest_interval_s": honest_interval_s,
        "node_policy": {
            "requests_per_minute": defaults.requests_per_minute,
            "daily_quota": defaults.daily_quota,
            "key_registration_burst": registration_burst or NodeConfig.key_registration_burst,
        },
        "load_average": load,
        "setup_s": {k: round(v, 2) for k, v in setup.items()}
        | {"total": round(time.perf_counter() - started, 2)},
        "quiet": q,
        "flood": f,
        "flood_over_quiet_p50": ratio,
        "target_ratio": TARGET_RATIO,
        "within_target": ratio is not None and ratio <= TARGET_RATIO,
        # The same ratio for the honest client's own encryption of its probe, which no
        # server touches: how much slower any work on this machine's cores ran during the
        # flood (the flooders' and the servers' extra work, and whatever else runs here).
        "encrypt_flood_over_quiet_p50": (
            round(encrypt[1] / encrypt[0], 3) if encrypt[0] and encrypt[1] else None
        ),
        "honest_errors": {
            "count": sum(honest_errors.values()),
            "kinds": dict(sorted(honest_errors.items())),
        },
        "attacks": _merge(flooded),
        "hostile_lookups_by_node_outcome": dict(
            sum((Counter(r["lookup_node_outcomes"]) for r in flooded), Counter())
        ),
        "flooder_threads_stuck": sum(r["threads_stuck"] for r in flooded),
        # Where the flood's cost lands: each server's CPU (cores busy on average) per phase.
        "server_cores_busy": {
            n: {
                "quiet": round((cpu_q1[n] - cpu_q0[n]) / quiet_wall, 3),
                "flood": round((cpu_f1[n] - cpu_f0[n]) / flood_wall, 3),
            }
            for n in servers
        },
        "flooder_cores_busy": round(sum(r["cpu_s"] for r in flooded) / flood_wall, 3),
        "memory_mb": {
            n: {
                "quiet_start": mb(rss_q0[n]),
                "before_flood": mb(rss_f0[n]),
                "flood_peak": mb(max(sampler.peak[n], rss_after[n])),
                "after_flood": mb(rss_after[n]),
                "growth_over_flood": mb(rss_after[n] - rss_f0[n]),
                "lifetime_peak": mb(hwm[n]),
            }
            for n in servers
        },
    }
