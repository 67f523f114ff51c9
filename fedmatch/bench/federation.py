"""``fedmatch bench federation``: a whole federation on this machine, lookups end to end.

It provisions a federation PKI (:func:`fedmatch.pki.provision.provision`), seeds K registers
of N synthetic unit-norm records each (:func:`fedmatch.demo.seed.seed_register`) with a few
planted records so that some lookups have hits, starts K real node processes
(``fedmatch node serve``, one search worker each) and a coordinator process, all over mutual
TLS, registers the requester's keys once, then runs Q signed lookups from C concurrent
clients through the coordinator (each fanning out to the K - 1 other nodes) and resolves the
ones with hits. It prints one JSON object (the CLI puts it on the last line of stdout):
lookup latency end to end (p50, p95, max), errors by kind, bytes per lookup, peak RSS of every
process and its RSS at the start and end of the timed phase (memory stability), CPU seconds
per lookup by party (node search work vs the whole), the plain searches of the same
registers with the same probes (:mod:`fedmatch.bench.plain`), and the agreement of the
encrypted hits with the exact (float64) decisions. Every node and the coordinator run the HE
parameter set ``param_set`` (``he_param_set`` in their configuration files), and the
requester's keys are made for it.

Probes alternate genuine (a capture, at cosine 0.8, of a person planted at one or two nodes
at cosine 0.9) and impostor (a fresh random vector). Agreement compares, per lookup, the set
of (member state, record reference) the resolve returns with the set a float64 search finds
at the same threshold in the same registers.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import statistics
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedmatch.audit.entry import AuditEvent, EventKind
from fedmatch.audit.log import AuditLog
from fedmatch.audit.note import NoteSigner
from fedmatch.audit.party import node_origin
from fedmatch.bench.cluster import (
    MODEL,
    Sampler,
    cpu_seconds,
    mb,
    pct,
    start_federation,
    status,
)
from fedmatch.bench.plain import PlainBaselines
from fedmatch.demo.seed import seed_logged
from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.domain import Category, Purpose, Sex, reference_digest
from fedmatch.errors import FedmatchError, InvalidInput
from fedmatch.he.params import DEFAULT_PARAM_SET, get_param_set
from fedmatch.pki.provision import PartyFiles, provision

__all__ = [
    "LEGAL_BASIS",
    "STATES",
    "Outcome",
    "Probe",
    "bench_experts",
    "bench_federation",
    "bench_requester",
    "prepare_registers",
    "provision_parties",
    "timed_lookup",
]

REQUESTER = "DE"
# The requester first, then the other member states: K nodes are the first K of these.
STATES = (
    "DE", "IT", "FR", "ES", "GR", "AT", "BE", "BG", "CY", "CZ", "DK", "EE", "FI", "HR",
    "HU", "IE", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
)  # fmt: skip
LEGAL_BASIS = "Reg. (EU) 2024/1358 Art. 27"
# The requesting state's two hit verifiers (people with a `verifier` certificate), who
# confirm every candidate hit before its details are asked for.
EXPERTS = ("anna", "ben")
# The officer whose own key signs the bench's requests (a personal `officer` certificate).
BENCH_OFFICER = "bench-officer"
# Memory is stable when no process's RSS grows more than this over the second half of the
# timed phase: allocator pools and caches fill during the first lookups and then stay, a
# leak keeps growing with every lookup. Growth over the whole timed phase is reported too.
_STABLE_SLACK_BYTES = 32 * 1024 * 1024
_STABLE_SLACK_FRACTION = 0.05


@dataclass(frozen=True)
class Probe:
    template: npt.NDArray[np.float32]
    genuine: bool


@dataclass
class Outcome:
    latency_s: float = 0.0
    timings_ms: dict[str, float] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0
    node_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    hits: set[tuple[str, str]] = field(default_factory=set)
    resolve_s: float | None = None
    key_bytes: int = 0


# -- data ------------------------------------------------------------------------------------


def _plan(
    rng: np.random.Generator, count: int, dimension: int, searched: list[str]
) -> tuple[list[Probe], dict[str, list[tuple[str, npt.NDArray[np.float32]]]]]:
    """Probes, alternating genuine and impostor, and the records planted for the genuine
    ones: per state, (reference, template)."""
    probes: list[Probe] = []
    planted: dict[str, list[tuple[str, npt.NDArray[np.float32]]]] = {s: [] for s in searched}
    for q in range(count):
        person = unit_vectors(rng, 1, dimension)[0]
        if q % 2 == 1:
            probes.append(Probe(person, genuine=False))
            continue
        holders = rng.choice(len(searched), size=1 + int(q % 4 == 0), replace=False)
        for h in holders:
            state = searched[int(h)]
            reference = f"{state}-PLANT-{q:05d}"
            planted[state].append((reference, capture(person, rng, 0.9)))
        probes.append(Probe(capture(person, rng, 0.8), genuine=True))
    return probes, planted


def prepare_registers(
    workdir: Path,
    states: list[str],
    records: int,
    dimension: int,
    planted: dict[str, list[tuple[str, npt.NDArray[np.float32]]]],
    parties: dict[str, PartyFiles],
) -> None:
    """Each node's register afresh, logged in its audit log as a node logs it: the synthetic
    records as seeded, the planted ones as enrolled (the register reconciles)."""
    from node.records import NewRecord, RecordMeta
    from node.store import RecordStore

    for state in states:
        (workdir / f"{state}.sqlite").unlink(missing_ok=True)
        shutil.rmtree(workdir / f"audit-{state}", ignore_errors=True)
    today = dt.date.today()
    event = today - dt.timedelta(days=200)
    for i, state in enumerate(states):
        db = workdir / f"{state}.sqlite"
        signer = NoteSigner.load(parties[f"node-{state}"].signing_key)
        log = AuditLog(workdir / f"audit-{state}" / "log", signer, node_origin(state))
        try:
            seed_logged(log, db, state, records, 5000 + i, dimension, MODEL, today)
            extra = planted.get(state, [])
            if not extra:
                continue
            store = RecordStore(db, state, dimension, MODEL)
            try:
                rows = store.add_many(
                    NewRecord(
                        RecordMeta(
                            ref,
                            Category.IRREGULAR_CROSSING,
                            event,
                            "bench",
                            event,
                            Sex.MALE,
                            operator_id="bench",
                            birth_date=event - dt.timedelta(days=30 * 365),
                        ),
                        template,
                        MODEL,
                    )
                    for ref, template in extra
                )
            finally:
                store.close()
            for row, (ref, _) in zip(rows, extra, strict=True):
                log.append(
                    AuditEvent(
                        EventKind.RECORD_ENROLLED,
                        registers=(state,),
                        operator="bench",
                        outcome="ok",
                        labels={
                            "record": str(row),
                            "record_digest": reference_digest(state, ref),
                            "category": Category.IRREGULAR_CROSSING.value,
                            "facial_image": "no",
                        },
                    )
                )
            log.checkpoint()
        finally:
            log.close()


def provision_parties(
    directory: Path, states: list[str], requesters: list[str]
) -> dict[str, PartyFiles]:
    """The federation's PKI (made once, reused after): a node per state, the coordinator,
    the auditor, and for each requesting state an operator workstation, its hit verifiers
    (:data:`EXPERTS`) and the officer whose key signs its requests."""
    return provision(
        directory, states, operators=requesters, experts=dict.fromkeys(requesters, EXPERTS),
        officers=dict.fromkeys(requesters, (BENCH_OFFICER,)),
    )  # fmt: skip


def bench_requester(
    parties: dict[str, PartyFiles],
    state: str,
    coordinator: str,
    keys: Any = None,
    param_set: str = DEFAULT_PARAM_SET.name,
) -> Any:
    """A :class:`fedmatch.requester.Requester` of ``state`` at the coordinator (fresh keys
    for ``param_set`` unless ``keys``), as :func:`provision_parties` provisioned its
    workstation and officer."""
    # Imported here: the requester library pulls in gRPC, which the CLI loads lazily.
    from fedmatch.he.keypair import RequesterKeys
    from fedmatch.protocol.statement import RequestSigner
    from fedmatch.protocol.transport import Security
    from fedmatch.requester import Requester

    # The officer's own key signs; the workstation's certificate makes the channel.
    workstation = parties[f"operator-{state}"]
    officer = parties[f"officer-{BENCH_OFFICER}-{state}"]
    return Requester(
        coordinator,
        state,
        keys if keys is not None else RequesterKeys.generate(get_param_set(param_set)),
        unit="bench-unit",
        operator=BENCH_OFFICER,
        signer=RequestSigner(officer.signer(), officer.tls.chain.read_bytes()),
        credentials=Security(workstation.tls).channel_credentials(),
    )


def bench_experts(parties: dict[str, PartyFiles], state: str) -> list[Any]:
    """The hit verifiers of ``state`` (:data:`EXPERTS`), who confirm every candidate hit."""
    from fedmatch.protocol.verification import VerdictSigner

    return [
        VerdictSigner(party.signer(), party.tls.chain.read_bytes())
        for party in (parties[f"verifier-{p}-{state}"] for p in EXPERTS)
    ]


def _baseline(
    workdir: Path,
    searched: list[str],
    dimension: int,
    probes: list[Probe],
    threshold: float,
    resolution: float,
) -> tuple[list[set[tuple[str, str]]], PlainBaselines, int, list[bool]]:
    """Per probe, the (state, reference) pairs an exact (float64) search of the searched
    registers finds at ``threshold``, and the plain searches timed (each over every
    searched register at once, as the federation searches them all per lookup); also per
    probe whether a record scores within ``resolution`` of the threshold (the parameter
    set's: a record this close may fall on either side, so such lookups are counted apart
    as well)."""
    from node.store import RecordStore

    stores = [RecordStore(workdir / f"{s}.sqlite", s, dimension, MODEL) for s in searched]
    try:
        parts = [store.templates() for store in stores]
        owners = np.concatenate([np.full(len(ids), i) for i, (ids, _) in enumerate(parts)])
        ids = np.concatenate([ids for ids, _ in parts])
        plain = PlainBaselines(np.concatenate([t for _, t in parts]), threshold)
        del parts
        expected, borderline = [], []
        plain.search(probes[0].template, timed=False)  # warms caches, as the warm-up lookup
        for probe in probes:
            hits = plain.search(probe.template)
            scores = plain.scores(probe.template)
            borderline.append(bool(np.any(np.abs(scores - threshold) < resolution)))
            expected.append(
                {
                    (searched[int(owners[h])], stores[int(owners[h])].get(int(ids[h])).reference)
                    for h in sorted(hits)
                }
            )
        return expected, plain, int(plain.rows.shape[0]), borderline
    finally:
        for store in stores:
            store.close()


# -- the timed phase ---------------------------------------------------------------------------


def timed_lookup(requester: Any, experts: list[Any], probe: Probe, timeout: float) -> Outcome:
    import grpc

    from fedmatch.protocol.verification import Evidence, HitKey
    from fedmatch.requester.client import LookupReport

    out = Outcome()
    header = requester.header(Purpose.ASYLUM_DUBLIN, LEGAL_BASIS, "BENCH-FED")
    t0 = time.perf_counter()
    try:
        report: LookupReport = requester.lookup(probe.template, header, timeout=timeout)
    except grpc.RpcError as err:
        out.errors.append(f"lookup:{err.code().name}")
        return out
    except FedmatchError as exc:
        out.errors.append(f"lookup:{type(exc).__name__}")
        return out
    out.latency_s = time.perf_counter() - t0
    out.timings_ms = dict(report.timings_ms)
    out.bytes_up, out.bytes_down = report.bytes_sent, report.bytes_received
    out.key_bytes = report.key_bytes_sent
    for node in report.nodes:
        out.node_ms.append(node.elapsed_ms)
        if node.outcome != "ok":
            out.errors.append(f"node:{node.outcome}")
    if report.matches:
        t1 = time.perf_counter()
        header = report.header
        try:
            # The verification packets first: every verdict binds the images compared.
            fetched = requester.fetch_packets(report)
            verdicts = [
                person.confirm(
                    header.query_id,
                    header.requesting_state,
                    HitKey(p.member_state, p.handle),
                    Evidence(fetched.probe_sha256, p.image_sha256),
                )
                for person in experts
                for p in fetched.packets
            ]
            resolved = requester.resolve(report, dt.date.today().isoformat(), verdicts)
        except grpc.RpcError as err:
            out.errors.append(f"resolve:{err.code().name}")
            return out
        except FedmatchError as exc:
            out.errors.append(f"resolve:{type(exc).__name__}")
            return out
        out.resolve_s = time.perf_counter() - t1
        out.hits = {(h["member_state"], h["reference"]) for h in resolved.hits}
        if len(resolved.hits) != len(report.matches):
            out.errors.append("resolve:missing_details")
    return out


def bench_federation(
    nodes: int,
    records_per_node: int,
    queries: int,
    concurrency: int = 1,
    dimension: int = 128,
    threshold: float = 0.45,
    search_workers: int = 1,
    workdir: Path | None = None,
    seed: int = 11,
    param_set: str = DEFAULT_PARAM_SET.name,
) -> dict[str, Any]:
    if not 2 <= nodes <= len(STATES):
        raise InvalidInput(f"--nodes must be between 2 and {len(STATES)}")
    if records_per_node < 1 or queries < 1 or concurrency < 1 or search_workers < 0:
        raise InvalidInput("records, queries and concurrency must be positive")
    states = list(STATES[:nodes])
    searched = [s for s in states if s != REQUESTER]
    rng = np.random.default_rng(seed)
    # One extra impostor probe warms every cache (first search at each node) untimed.
    probes, planted = _plan(rng, queries, dimension, searched)
    warmup = Probe(unit_vectors(rng, 1, dimension)[0], genuine=False)
    started = time.perf_counter()
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fedmatch-fed-")))
        workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        parties = provision_parties(workdir / "pki", states, [REQUESTER])
        pki_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        prepare_registers(workdir, states, records_per_node, dimension, planted, parties)
        seed_s = time.perf_counter() - t0
        expected, plain, searched_rows, borderline = _baseline(
            workdir, searched, dimension, probes, threshold, get_param_set(param_set).resolution
        )

        t0 = time.perf_counter()
        running = start_federation(
            stack, workdir, parties, states, dimension, threshold, search_workers,
            param_set=param_set,
        )  # fmt: skip
        pids = dict(running.pids)
        start_s = time.perf_counter() - t0

        requester = bench_requester(parties, REQUESTER, running.coordinator, param_set=param_set)
        stack.callback(requester.close)
        experts = bench_experts(parties, REQUESTER)
        pids["requester"] = os.getpid()
        t0 = time.perf_counter()
        key_bytes = requester.register_keys(
            requester.header(Purpose.ASYLUM_DUBLIN, LEGAL_BASIS, "BENCH-KEYS"), timeout=900.0
        )
        keys_s = time.perf_counter() - t0
        warm = timed_lookup(requester, experts, warmup, timeout=300.0)

        rss_start = {name: status(pid)["VmRSS"] for name, pid in pids.items()}
        cpu_start = {name: cpu_seconds(pid) for name, pid in pids.items()}
        t0, m0 = time.perf_counter(), time.monotonic()
        with Sampler(pids) as sampler, ThreadPoolExecutor(concurrency) as pool:
            outcomes = list(pool.map(lambda p: timed_lookup(requester, experts, p, 300.0), probes))
        wall_s = time.perf_counter() - t0
        rss_mid = sampler.at(m0 + wall_s / 2, rss_start)
        cpu_end = {name: cpu_seconds(pid) for name, pid in pids.items()}
        status_end = {name: status(pid) for name, pid in pids.items()}

    latencies = [o.latency_s for o in outcomes if not o.errors]
    errors = Counter(e for o in [warm, *outcomes] for e in o.errors)
    agreed = [not o.errors and o.hits == want for o, want in zip(outcomes, expected, strict=True)]
    clear = [a for a, near in zip(agreed, borderline, strict=True) if not near]
    p50 = statistics.median(latencies) if latencies else 0.0
    cpu = {name: (cpu_end[name] - cpu_start[name]) / queries for name in pids}
    node_cpu = [cpu[s] for s in states if s != REQUESTER]
    growth = {name: status_end[name]["VmRSS"] - rss_start[name] for name in pids}
    late = {name: status_end[name]["VmRSS"] - rss_mid.get(name, rss_start[name]) for name in pids}
    memory = {
        name: {
            "peak_mb": mb(status_end[name]["VmHWM"]),
            "start_mb": mb(rss_start[name]),
            "mid_mb": mb(rss_mid.get(name, rss_start[name])),
            "end_mb": mb(status_end[name]["VmRSS"]),
            "growth_second_half_mb": mb(late[name]),
            "max_timed_mb": mb(max(sampler.peak[name], status_end[name]["VmRSS"])),
        }
        for name in pids
    }
    stable = all(
        late[name] <= max(_STABLE_SLACK_BYTES, _STABLE_SLACK_FRACTION * rss_start[name])
        for name in pids
    )

    def p50_of(key: str) -> float:
        values = [o.timings_ms[key] for o in outcomes if key in o.timings_ms]
        return round(statistics.median(values), 1) if values else 0.0

    node_ms = [ms for o in outcomes if not o.errors for ms in o.node_ms]
    resolves = [o.resolve_s for o in outcomes if o.resolve_s is not None]
    return {
        "bench": "federation",
        "nodes": nodes,
        "searched_per_lookup": len(searched),
        "records_per_node": records_per_node,
        "planted_records": sum(len(v) for v in planted.values()),
        "dim": dimension,
        "param_set": param_set,
        "queries": queries,
        "concurrency": concurrency,
        "search_workers": search_workers,
        "cpu_count": len(os.sched_getaffinity(0)),
        "transport": "mtls",
        "signed_requests": True,
        "threshold": threshold,
        "setup_s": {
            "pki": round(pki_s, 2),
            "seed": round(seed_s, 2),
            "start_processes": round(start_s, 2),
            "register_keys": round(keys_s, 2),
            "total": round(time.perf_counter() - started, 2),
        },
        "key_bytes_once": key_bytes,
        "warmup_s": round(warm.latency_s, 3),
        "p50_s": round(p50, 4),
        "p95_s": pct(latencies, 95),
        "max_s": round(max(latencies), 4) if latencies else 0.0,
        "mean_s": round(statistics.fmean(latencies), 4) if latencies else 0.0,
        "wall_s": round(wall_s, 2),
        "lookups_per_s": round(queries / wall_s, 3) if wall_s > 0 else None,
        "errors": {"count": sum(errors.values()), "kinds": dict(sorted(errors.items()))},
        "key_reregistrations": sum(o.key_bytes > 0 for o in outcomes),
        "bytes_up_per_lookup": round(statistics.fmean(o.bytes_up for o in outcomes), 1),
        "bytes_down_per_lookup": round(statistics.fmean(o.bytes_down for o in outcomes), 1),
        # The requester's own split of one lookup (median of each part).
        "lookup_parts_ms_p50": {
            k: p50_of(f"{k}_ms") for k in ("federation", "encrypt", "lookup", "decrypt")
        },
        # Each node's call as the coordinator timed it (witnessed checkpoint excluded).
        "node_call_ms": {"p50": pct(node_ms, 50), "p95": pct(node_ms, 95)},
        # CPU seconds per lookup: all searched nodes together vs the coordinator and the
        # requester; with 2 cores, nodes_total / 2 bounds the latency at concurrency 1.
        "cpu_s_per_lookup": {
            "nodes_total": round(sum(node_cpu), 3),
            "node_p50": round(statistics.median(node_cpu), 4),
            "node_max": round(max(node_cpu), 4),
            "coordinator": round(cpu["coordinator"], 3),
            "requester": round(cpu["requester"], 3),
            "requesting_state_node": round(cpu[REQUESTER], 4),
        },
        "resolve_p50_s": round(statistics.median(resolves), 4) if resolves else None,
        "lookups_with_hits": sum(bool(o.hits) for o in outcomes),
        "expected_lookups_with_hits": sum(bool(e) for e in expected),
        # The plain searches cover every searched register at once (searched_records).
        "searched_records": searched_rows,
        **plain.report(p50),
        "agreement": round(sum(agreed) / queries, 4),
        # Lookups where some record scores within the set's resolution of the threshold
        # (either answer is within the engine's precision), and the agreement over the others.
        "borderline_lookups": sum(borderline),
        "agreement_outside_resolution": round(sum(clear) / len(clear), 4) if clear else None,
        "memory": memory,
        "peak_rss_sum_mb": mb(sum(s["VmHWM"] for s in status_end.values())),
        "rss_growth_max_mb": mb(max(growth.values())),
        "rss_growth_second_half_max_mb": mb(max(late.values())),
        "memory_stable": stable,
    }
