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
per lookup by party (node search work vs the whole), a plain-numpy search of the same
registers with the same probes, and the agreement of the encrypted hits with numpy's.

Probes alternate genuine (a capture, at cosine 0.8, of a person planted at one or two nodes
at cosine 0.9) and impostor (a fresh random vector). Agreement compares, per lookup, the set
of (member state, record reference) the resolve returns with the set numpy finds at the same
threshold in the same registers.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedmatch.demo.seed import seed_register
from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.domain import Category, Purpose, Sex
from fedmatch.errors import FedmatchError, InvalidInput
from fedmatch.ops.subprocs import fedmatch_process, wait_port
from fedmatch.pki.ca import TlsFiles
from fedmatch.pki.provision import PartyFiles, provision

__all__ = ["bench_federation"]

MODEL = "bench-synthetic"
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
_START_TIMEOUT_S = 600.0
# The encrypted scores err by ~1e-4 (fedmatch.he.params): a record this close to the
# threshold may fall on either side, so such lookups are counted apart as well.
_RESOLUTION = 1e-4


@dataclass(frozen=True)
class _Probe:
    template: npt.NDArray[np.float32]
    genuine: bool


@dataclass
class _Outcome:
    latency_s: float = 0.0
    timings_ms: dict[str, float] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0
    node_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    hits: set[tuple[str, str]] = field(default_factory=set)
    resolve_s: float | None = None
    key_bytes: int = 0


# -- processes -------------------------------------------------------------------------------


def _own_status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value, _unit = line.split()
                out[name.rstrip(":")] = int(value) * 1024
    return out


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (a node's search workers)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as fh:
                    kids = [int(k) for k in fh.read().split()]
            except OSError:
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a party in bytes: a node with --search-workers > 1 is its process
    and its worker processes, summed (the bench's own process is counted alone: its
    children are the parties)."""
    out = _own_status(pid)
    if pid != os.getpid():
        for child in _descendants(pid):
            try:
                extra = _own_status(child)
            except OSError:  # exited in between
                continue
            for name, value in extra.items():
                out[name] = out.get(name, 0) + value
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (its threads included)."""
    with open(f"/proc/{pid}/stat") as fh:
        # The command name (field 2) may hold spaces; the fields after its ')' are fixed.
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # One BLAS thread per process: 28 processes on a few cores must not each spin a pool.
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


# -- configuration files ---------------------------------------------------------------------


def _q(value: str | Path) -> str:
    """A TOML basic string (paths, addresses, keys)."""
    return json.dumps(str(value))


def _tls_table(files: TlsFiles) -> str:
    crls = ", ".join(_q(c) for c in files.crls)
    return (
        f"\n[tls]\nkey = {_q(files.key)}\nchain = {_q(files.chain)}\nroot = {_q(files.root)}\n"
        f"crls = [{crls}]\n"
    )


def _audit_table(directory: Path, party: PartyFiles, auditor: str, coordinator: str = "") -> str:
    table = (
        f"\n[audit]\ndirectory = {_q(directory)}\nsigning_key = {_q(party.signing_key)}\n"
        f"auditors = [{_q(auditor)}]\ncheckpoint_interval_seconds = 5.0\n"
    )
    return table + (f"coordinator_key = {_q(coordinator)}\n" if coordinator else "")


def _node_toml(
    workdir: Path, state: str, parties: dict[str, PartyFiles], dimension: int, workers: int
) -> Path:
    party = parties[f"node-{state}"]
    path = workdir / f"node-{state}.toml"
    path.write_text(
        f"[node]\nmember_state = {_q(state)}\ndatabase = {_q(workdir / f'{state}.sqlite')}\n"
        f'dimension = {dimension}\nmodel_id = {_q(MODEL)}\nlisten = "127.0.0.1:0"\n'
        f"replay_db = {_q(workdir / f'{state}.replay.sqlite')}\nsearch_workers = {workers}\n"
        + _audit_table(
            workdir / f"audit-{state}",
            party,
            parties["auditor-edps"].vkey,
            parties["coordinator"].vkey,
        )
        + _tls_table(party.tls)
        # Limits high enough for any run of the bench (the node still charges every search).
        + '\n[policy]\nversion = "bench-p1"\nrequests_per_minute = 1000000\n'
        "daily_quota = 1000000\n"
    )
    return path


def _coordinator_toml(
    workdir: Path,
    parties: dict[str, PartyFiles],
    addresses: dict[str, str],
    dimension: int,
    threshold: float,
) -> Path:
    coordinator = parties["coordinator"]
    nodes = "".join(
        f"\n[[nodes]]\nmember_state = {_q(s)}\naddress = {_q(a)}\n"
        f"key = {_q(parties[f'node-{s}'].vkey)}\n"
        for s, a in addresses.items()
    )
    path = workdir / "coordinator.toml"
    path.write_text(
        f'[coordinator]\nlisten = "127.0.0.1:0"\nmodel_id = {_q(MODEL)}\n'
        f"dimension = {dimension}\nthreshold = {threshold}\nnode_deadline_seconds = 120.0\n"
        f"replay_db = {_q(workdir / 'coordinator.replay.sqlite')}\n"
        + _audit_table(workdir / "audit-coordinator", coordinator, parties["auditor-edps"].vkey)
        + _tls_table(coordinator.tls)
        + nodes
    )
    return path


# -- data ------------------------------------------------------------------------------------


def _plan(
    rng: np.random.Generator, count: int, dimension: int, searched: list[str]
) -> tuple[list[_Probe], dict[str, list[tuple[str, npt.NDArray[np.float32]]]]]:
    """Probes, alternating genuine and impostor, and the records planted for the genuine
    ones: per state, (reference, template)."""
    probes: list[_Probe] = []
    planted: dict[str, list[tuple[str, npt.NDArray[np.float32]]]] = {s: [] for s in searched}
    for q in range(count):
        person = unit_vectors(rng, 1, dimension)[0]
        if q % 2 == 1:
            probes.append(_Probe(person, genuine=False))
            continue
        holders = rng.choice(len(searched), size=1 + int(q % 4 == 0), replace=False)
        for h in holders:
            state = searched[int(h)]
            reference = f"{state}-PLANT-{q:05d}"
            planted[state].append((reference, capture(person, rng, 0.9)))
        probes.append(_Probe(capture(person, rng, 0.8), genuine=True))
    return probes, planted


def _seed(
    workdir: Path,
    states: list[str],
    records: int,
    dimension: int,
    planted: dict[str, list[tuple[str, npt.NDArray[np.float32]]]],
) -> None:
    from node.records import NewRecord, RecordMeta
    from node.store import RecordStore

    today = dt.date.today()
    event = today - dt.timedelta(days=200)
    for i, state in enumerate(states):
        db = workdir / f"{state}.sqlite"
        seed_register(db, state, records, 5000 + i, dimension, MODEL, today)
        extra = planted.get(state, [])
        if not extra:
            continue
        store = RecordStore(db, state, dimension, MODEL)
        try:
            store.add_many(
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


def _baseline(
    workdir: Path, searched: list[str], dimension: int, probes: list[_Probe], threshold: float
) -> tuple[list[set[tuple[str, str]]], list[float], int, list[bool]]:
    """Per probe, the (state, reference) pairs a plain search of the searched registers
    finds at ``threshold``, and the time of each plain search (one matrix product over
    every searched register, as the federation searches them all per lookup); also per
    probe whether a record scores within the engine's resolution of the threshold."""
    from node.store import RecordStore

    stores = [RecordStore(workdir / f"{s}.sqlite", s, dimension, MODEL) for s in searched]
    try:
        parts = [store.templates() for store in stores]
        owners = np.concatenate([np.full(len(ids), i) for i, (ids, _) in enumerate(parts)])
        ids = np.concatenate([ids for ids, _ in parts])
        gallery = np.ascontiguousarray(np.concatenate([t for _, t in parts]), dtype=np.float32)
        del parts
        expected, times, borderline = [], [], []
        for probe in probes:
            t0 = time.perf_counter()
            scores = gallery @ probe.template
            hits = np.flatnonzero(scores >= threshold)
            times.append(time.perf_counter() - t0)
            borderline.append(bool(np.any(np.abs(scores - threshold) < _RESOLUTION)))
            expected.append(
                {
                    (searched[int(owners[h])], stores[int(owners[h])].get(int(ids[h])).reference)
                    for h in hits
                }
            )
        return expected, times, int(gallery.shape[0]), borderline
    finally:
        for store in stores:
            store.close()


# -- the timed phase ---------------------------------------------------------------------------


class _Sampler:
    """RSS of every process once a second during the timed phase: the peak of VmRSS seen,
    and the samples themselves (time, RSS per process) for the trend."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self.peak: dict[str, int] = dict.fromkeys(pids, 0)
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            sample = {}
            for name, pid in self._pids.items():
                try:
                    sample[name] = _status(pid)["VmRSS"]
                except OSError:
                    continue
                self.peak[name] = max(self.peak[name], sample[name])
            self.samples.append((time.monotonic(), sample))

    def at(self, when: float, fallback: dict[str, int]) -> dict[str, int]:
        """The sample taken nearest to monotonic time ``when`` (``fallback`` if none)."""
        if not self.samples:
            return fallback
        return min(self.samples, key=lambda s: abs(s[0] - when))[1]


def _lookup(requester: Any, experts: list[Any], probe: _Probe, timeout: float) -> _Outcome:
    import grpc

    from fedmatch.protocol.verification import Evidence, HitKey
    from fedmatch.requester.client import LookupReport

    out = _Outcome()
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


def _mb(value: float) -> float:
    return round(value / (1024 * 1024), 1)


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 4) if values else 0.0


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
) -> dict[str, Any]:
    if not 2 <= nodes <= len(STATES):
        raise InvalidInput(f"--nodes must be between 2 and {len(STATES)}")
    if records_per_node < 1 or queries < 1 or concurrency < 1 or search_workers < 0:
        raise InvalidInput("records, queries and concurrency must be positive")
    # Imported here: the requester library pulls in gRPC, which the CLI loads lazily.
    from fedmatch.he.keypair import RequesterKeys
    from fedmatch.protocol.statement import RequestSigner
    from fedmatch.protocol.transport import Security
    from fedmatch.protocol.verification import VerdictSigner
    from fedmatch.requester import Requester

    states = list(STATES[:nodes])
    searched = [s for s in states if s != REQUESTER]
    rng = np.random.default_rng(seed)
    # One extra impostor probe warms every cache (first search at each node) untimed.
    probes, planted = _plan(rng, queries, dimension, searched)
    warmup = _Probe(unit_vectors(rng, 1, dimension)[0], genuine=False)
    started = time.perf_counter()
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fedmatch-fed-")))
        workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        parties = provision(
            workdir / "pki", states, operators=[REQUESTER], experts={REQUESTER: EXPERTS},
            officers={REQUESTER: [BENCH_OFFICER]},
        )  # fmt: skip
        pki_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for state in states:
            (workdir / f"{state}.sqlite").unlink(missing_ok=True)
        _seed(workdir, states, records_per_node, dimension, planted)
        seed_s = time.perf_counter() - t0
        expected, numpy_times, searched_rows, borderline = _baseline(
            workdir, searched, dimension, probes, threshold
        )

        t0 = time.perf_counter()
        pids: dict[str, int] = {}
        waiting = []
        for state in states:
            config = _node_toml(workdir, state, parties, dimension, search_workers)
            port_file = workdir / f"node-{state}.port"
            port_file.unlink(missing_ok=True)
            log_path = workdir / f"node-{state}.log"
            proc = stack.enter_context(
                fedmatch_process(
                    ["node", "serve", "--config", str(config), "--port-file", str(port_file)],
                    log_path,
                    env=_child_env(),
                    stop_timeout=15.0,
                )
            )
            pids[state] = proc.pid
            waiting.append((state, port_file, proc, log_path))
        addresses = {
            s: f"127.0.0.1:{wait_port(p, proc, _START_TIMEOUT_S, lp)}" for s, p, proc, lp in waiting
        }
        config = _coordinator_toml(workdir, parties, addresses, dimension, threshold)
        port_file = workdir / "coordinator.port"
        port_file.unlink(missing_ok=True)
        log_path = workdir / "coordinator.log"
        cproc = stack.enter_context(
            fedmatch_process(
                ["coordinator", "serve", "--config", str(config), "--port-file", str(port_file)],
                log_path,
                env=_child_env(),
                stop_timeout=15.0,
            )
        )
        pids["coordinator"] = cproc.pid
        coordinator = f"127.0.0.1:{wait_port(port_file, cproc, _START_TIMEOUT_S, log_path)}"
        start_s = time.perf_counter() - t0

        # The officer's own key signs; the workstation's certificate makes the channel.
        workstation = parties[f"operator-{REQUESTER}"]
        officer = parties[f"officer-{BENCH_OFFICER}-{REQUESTER}"]
        requester = Requester(
            coordinator,
            REQUESTER,
            RequesterKeys.generate(),
            unit="bench-unit",
            operator=BENCH_OFFICER,
            signer=RequestSigner(officer.signer(), officer.tls.chain.read_bytes()),
            credentials=Security(workstation.tls).channel_credentials(),
        )
        stack.callback(requester.close)
        experts = [
            VerdictSigner(party.signer(), party.tls.chain.read_bytes())
            for party in (parties[f"verifier-{p}-{REQUESTER}"] for p in EXPERTS)
        ]
        pids["requester"] = os.getpid()
        t0 = time.perf_counter()
        key_bytes = requester.register_keys(
            requester.header(Purpose.ASYLUM_DUBLIN, LEGAL_BASIS, "BENCH-KEYS"), timeout=900.0
        )
        keys_s = time.perf_counter() - t0
        warm = _lookup(requester, experts, warmup, timeout=300.0)

        rss_start = {name: _status(pid)["VmRSS"] for name, pid in pids.items()}
        cpu_start = {name: _cpu_seconds(pid) for name, pid in pids.items()}
        t0, m0 = time.perf_counter(), time.monotonic()
        with _Sampler(pids) as sampler, ThreadPoolExecutor(concurrency) as pool:
            outcomes = list(pool.map(lambda p: _lookup(requester, experts, p, 300.0), probes))
        wall_s = time.perf_counter() - t0
        rss_mid = sampler.at(m0 + wall_s / 2, rss_start)
        cpu_end = {name: _cpu_seconds(pid) for name, pid in pids.items()}
        status_end = {name: _status(pid) for name, pid in pids.items()}

    latencies = [o.latency_s for o in outcomes if not o.errors]
    errors = Counter(e for o in [warm, *outcomes] for e in o.errors)
    agreed = [not o.errors and o.hits == want for o, want in zip(outcomes, expected, strict=True)]
    clear = [a for a, near in zip(agreed, borderline, strict=True) if not near]
    he_over = None
    numpy_p50 = statistics.median(numpy_times)
    p50 = statistics.median(latencies) if latencies else 0.0
    if latencies and numpy_p50 > 0:
        he_over = round(p50 / numpy_p50, 1)
    cpu = {name: (cpu_end[name] - cpu_start[name]) / queries for name in pids}
    node_cpu = [cpu[s] for s in states if s != REQUESTER]
    growth = {name: status_end[name]["VmRSS"] - rss_start[name] for name in pids}
    late = {name: status_end[name]["VmRSS"] - rss_mid.get(name, rss_start[name]) for name in pids}
    memory = {
        name: {
            "peak_mb": _mb(status_end[name]["VmHWM"]),
            "start_mb": _mb(rss_start[name]),
            "mid_mb": _mb(rss_mid.get(name, rss_start[name])),
            "end_mb": _mb(status_end[name]["VmRSS"]),
            "growth_second_half_mb": _mb(late[name]),
            "max_timed_mb": _mb(max(sampler.peak[name], status_end[name]["VmRSS"])),
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
        "p95_s": _pct(latencies, 95),
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
        "node_call_ms": {"p50": _pct(node_ms, 50), "p95": _pct(node_ms, 95)},
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
        "numpy_records": searched_rows,
        "numpy_p50_s": round(numpy_p50, 6),
        "he_over_numpy": he_over,
        "agreement": round(sum(agreed) / queries, 4),
        # Lookups where some record scores within 1e-4 of the threshold (either answer is
        # within the engine's precision), and the agreement over all the others.
        "borderline_lookups": sum(borderline),
        "agreement_outside_resolution": round(sum(clear) / len(clear), 4) if clear else None,
        "memory": memory,
        "peak_rss_sum_mb": _mb(sum(s["VmHWM"] for s in status_end.values())),
        "rss_growth_max_mb": _mb(max(growth.values())),
        "rss_growth_second_half_max_mb": _mb(max(late.values())),
        "memory_stable": stable,
    }
