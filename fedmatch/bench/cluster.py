"""A federation of real processes on this machine, for the benchmarks that need one.

It writes the TOML files of K nodes and a coordinator for a provisioned PKI
(:func:`fedmatch.pki.provision.provision`), starts them as real ``fedmatch node serve`` and
``fedmatch coordinator serve`` processes over mutual TLS (:func:`start_federation`), and
measures processes from outside, through ``/proc``: resident memory (a node with search
workers counted with its workers), CPU seconds, and RSS sampled once a second
(:class:`Sampler`). ``fedmatch bench federation`` and ``fedmatch bench flood`` both run on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedmatch.he.params import DEFAULT_PARAM_SET
from fedmatch.ops.subprocs import fedmatch_process, wait_port
from fedmatch.pki.ca import TlsFiles
from fedmatch.pki.provision import PartyFiles

__all__ = [
    "MODEL",
    "Federation",
    "NodePolicy",
    "Sampler",
    "child_env",
    "cpu_seconds",
    "mb",
    "pct",
    "start_federation",
    "status",
]

MODEL = "bench-synthetic"
_START_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class NodePolicy:
    """The ``[policy]`` limits every node of the bench applies per requesting state."""

    requests_per_minute: int = 1_000_000
    daily_quota: int = 1_000_000


@dataclass(frozen=True)
class Federation:
    """The running processes: each node's address by state, the coordinator's address, and
    every process id by name (the member states and ``coordinator``)."""

    addresses: dict[str, str]
    coordinator: str
    pids: dict[str, int]


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


def status(pid: int) -> dict[str, int]:
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (its threads included)."""
    with open(f"/proc/{pid}/stat") as fh:
        # The command name (field 2) may hold spaces; the fields after its ')' are fixed.
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    # One BLAS thread per process: 28 processes on a few cores must not each spin a pool.
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class Sampler:
    """RSS of every process once a second while it runs: the peak of VmRSS seen, and the
    samples themselves (time, RSS per process) for the trend."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self.peak: dict[str, int] = dict.fromkeys(pids, 0)
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
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
                    sample[name] = status(pid)["VmRSS"]
                except OSError:
                    continue
                self.peak[name] = max(self.peak[name], sample[name])
            self.samples.append((time.monotonic(), sample))

    def at(self, when: float, fallback: dict[str, int]) -> dict[str, int]:
        """The sample taken nearest to monotonic time ``when`` (``fallback`` if none)."""
        if not self.samples:
            return fallback
        return min(self.samples, key=lambda s: abs(s[0] - when))[1]


def mb(value: float) -> float:
    return round(value / (1024 * 1024), 1)


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 4) if values else 0.0


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
    workdir: Path,
    state: str,
    parties: dict[str, PartyFiles],
    dimension: int,
    workers: int,
    policy: NodePolicy,
    param_set: str,
    registrations: str,
) -> Path:
    party = parties[f"node-{state}"]
    path = workdir / f"node-{state}.toml"
    path.write_text(
        f"[node]\nmember_state = {_q(state)}\ndatabase = {_q(workdir / f'{state}.sqlite')}\n"
        f'dimension = {dimension}\nmodel_id = {_q(MODEL)}\nlisten = "127.0.0.1:0"\n'
        f"replay_db = {_q(workdir / f'{state}.replay.sqlite')}\nsearch_workers = {workers}\n"
        f"he_param_set = {_q(param_set)}\n{registrations}"
        + _audit_table(
            workdir / f"audit-{state}",
            party,
            parties["auditor-edps"].vkey,
            parties["coordinator"].vkey,
        )
        + _tls_table(party.tls)
        # The node still charges every search against these.
        + f'\n[policy]\nversion = "bench-p1"\nrequests_per_minute = {policy.requests_per_minute}\n'
        f"daily_quota = {policy.daily_quota}\n"
    )
    return path


def _coordinator_toml(
    workdir: Path,
    parties: dict[str, PartyFiles],
    addresses: dict[str, str],
    dimension: int,
    threshold: float,
    param_set: str,
    registrations: str,
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
        f"he_param_set = {_q(param_set)}\n{registrations}"
        f"replay_db = {_q(workdir / 'coordinator.replay.sqlite')}\n"
        + _audit_table(workdir / "audit-coordinator", coordinator, parties["auditor-edps"].vkey)
        + _tls_table(coordinator.tls)
        + nodes
    )
    return path


# -- starting it -----------------------------------------------------------------------------


def _serve(
    stack: ExitStack, workdir: Path, name: str, role: str, config: Path
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """``fedmatch <role> serve`` as ``name``: the process, its port file and its log."""
    port_file = workdir / f"{name}.port"
    port_file.unlink(missing_ok=True)
    log_path = workdir / f"{name}.log"
    proc = stack.enter_context(
        fedmatch_process(
            [role, "serve", "--config", str(config), "--port-file", str(port_file)],
            log_path,
            env=child_env(),
            stop_timeout=15.0,
        )
    )
    return proc, port_file, log_path


def start_federation(
    stack: ExitStack,
    workdir: Path,
    parties: dict[str, PartyFiles],
    states: list[str],
    dimension: int,
    threshold: float,
    search_workers: int = 1,
    policy: NodePolicy | None = None,
    param_set: str = DEFAULT_PARAM_SET.name,
    registration_burst: int | None = None,
) -> Federation:
    """A node process per state (their registers already seeded in ``workdir``), then the
    coordinator, each serving on a port of its own choice, all with the HE parameter set
    ``param_set`` (and, if given, ``registration_burst`` new key bundles per state before
    the hourly quota applies, at every node and the coordinator); ``stack`` stops them all
    (SIGTERM, graceful) on the way out. Each process's output is in ``workdir/<name>.log``."""
    policy = policy or NodePolicy()
    registrations = (
        "" if registration_burst is None else f"key_registration_burst = {registration_burst}\n"
    )
    started = {}
    for state in states:
        config = _node_toml(
            workdir, state, parties, dimension, search_workers, policy, param_set, registrations
        )
        started[state] = _serve(stack, workdir, f"node-{state}", "node", config)
    addresses = {
        s: f"127.0.0.1:{wait_port(port, proc, _START_TIMEOUT_S, log)}"
        for s, (proc, port, log) in started.items()
    }
    config = _coordinator_toml(
        workdir, parties, addresses, dimension, threshold, param_set, registrations
    )
    proc, port, log = _serve(stack, workdir, "coordinator", "coordinator", config)
    pids = {s: p.pid for s, (p, _, _) in started.items()} | {"coordinator": proc.pid}
    coordinator = f"127.0.0.1:{wait_port(port, proc, _START_TIMEOUT_S, log)}"
    return Federation(addresses, coordinator, pids)
