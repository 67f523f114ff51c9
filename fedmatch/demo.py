"""``fedmatch demo``: a three-state federation on this machine, end to end.

Three node processes and a coordinator process, real gRPC servers on 127.0.0.1 (free ports),
each node with a synthetic background register (random unit vectors standing in for other
people's SFace templates). One traveller is enrolled from photographs at node B as an
irregular border crossing and at node C as an asylum applicant (later); a different
photograph of the traveller is then looked up from node A, and a photograph of someone else
as a control (see :mod:`fedmatch.demo_photos` for which photographs). The last stdout line
is JSON: decision, per-node outcomes, timings and bytes.

Every party signs its own audit log with its own Ed25519 key (made here as `fedmatch audit
keygen` makes them, in ``<workdir>/keys``); nodes witness the coordinator's log and search
only for requests on its record. Two people of the requesting state verify the candidate
hits before their details are asked for. The work directory also gets an ``auditor.toml``
for ``fedmatch audit verify``.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fedmatch.audit.note import NoteSigner
from fedmatch.audit.party import COORDINATOR_ORIGIN, create_party_key, node_origin
from fedmatch.biometrics.pipeline import FacePipeline
from fedmatch.demo_photos import folder_photos, packaged_photos
from fedmatch.domain import Category, Purpose, QueryHeader, Sex
from fedmatch.enrolment import EnrolmentRecord, NodeEnroller
from fedmatch.errors import InvalidInput
from fedmatch.report import lookup_summary
from fedmatch.requester import Requester
from fedmatch.seed import seed_register

__all__ = ["run_demo"]

MODEL = "sface-2021dec-int8bq"
DIM = 128
# A = requesting state, B = state of first irregular entry, C = state of a later application.
STATES = {"A": "DE", "B": "IT", "C": "FR"}
LEGAL_BASIS = "Reg. (EU) 2024/1358 Art. 27; Reg. (EU) 2024/1351"
AUDITOR = "auditor-demo"
# Checkpoints are published (and witnessed) this often without traffic.
CHECKPOINT_SECONDS = 2.0


def _say(text: str) -> None:
    print(text, flush=True)


def _wait_port(path: Path, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return int(path.read_text().strip())
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before serving")
        time.sleep(0.05)
    raise RuntimeError("process did not start serving in time")


@contextmanager
def _process(args: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = log_path.open("wb")
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed arguments
        [sys.executable, "-m", "fedmatch", *args], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _enroll(
    address: str, state: str, template: np.ndarray, reference: str, category: Category,
    event_date: dt.date, place: str,
) -> int:  # fmt: skip
    operator = f"{state}-officer-7"
    header = QueryHeader(
        secrets.token_hex(16), state, Purpose.ASYLUM_DUBLIN, LEGAL_BASIS, reference,
        unit=f"{state}-enrolment", operator=operator,
    )  # fmt: skip
    record = EnrolmentRecord(reference, category, event_date, place, event_date, Sex.MALE, operator)
    with NodeEnroller(address, MODEL) as node:
        return node.enroll(header, record, template)


def _party_key(path: Path, name: str) -> str:
    """The verifier key of the signing key at ``path``, made first if there is none (a work
    directory that is used again keeps its parties' keys)."""
    if path.exists():
        signer = NoteSigner.load(path)
        if signer.name != name:
            raise InvalidInput(f"{path.name} is the key of {signer.name}, not of {name}")
        return signer.vkey()
    return create_party_key(path, name)


def _toml(value: str) -> str:
    """A TOML basic string (the values written here are paths, addresses and keys)."""
    return json.dumps(value)


def _audit_table(directory: str, key: str, auditor: str, coordinator_key: str = "") -> str:
    table = (
        f"\n[audit]\ndirectory = {_toml(directory)}\nsigning_key = {_toml(key)}\n"
        f"auditors = [{_toml(auditor)}]\ncheckpoint_interval_seconds = {CHECKPOINT_SECONDS}\n"
    )
    if coordinator_key:
        table += f"coordinator_key = {_toml(coordinator_key)}\n"
    return table


def _nodes_tables(addresses: dict[str, str], keys: dict[str, str]) -> str:
    return "".join(
        f"\n[[nodes]]\nmember_state = {_toml(s)}\naddress = {_toml(a)}\nkey = {_toml(keys[s])}\n"
        for s, a in addresses.items()
    )


def _auditor_toml(path: Path, coordinator: str, coordinator_key: str, nodes: str) -> None:
    path.write_text(
        "# An auditor of the demo federation: `fedmatch audit verify --config auditor.toml`\n"
        "# (it reads the parties at these addresses while they run). Paths are relative to\n"
        "# this file.\n"
        f"[auditor]\nname = {_toml(AUDITOR)}\nsigning_key = {_toml('keys/auditor.key')}\n"
        f"state_dir = {_toml('auditor-state')}\n"
        f"\n[coordinator]\naddress = {_toml(coordinator)}\nkey = {_toml(coordinator_key)}\n" + nodes
    )


def run_demo(records: int = 20_000, workdir: Path | None = None, photos: Path | None = None) -> int:
    started = time.perf_counter()
    today = dt.date.today()
    crossing = today - dt.timedelta(days=270)  # about 9 months ago
    application_c = today - dt.timedelta(days=180)
    with ExitStack() as stack:
        temporary = workdir is None
        if workdir is None:
            workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="fedmatch-demo-"))
            )
        workdir.mkdir(parents=True, exist_ok=True)
        _say(f"fedmatch demo: 3 member-state nodes + coordinator on 127.0.0.1 (work dir {workdir})")

        t0 = time.perf_counter()
        # Each party's signing key (`fedmatch audit keygen`), and the auditor's. A fresh
        # federation: the audit logs of an earlier run in this work directory are removed.
        keys_dir = workdir / "keys"
        coordinator_key = _party_key(keys_dir / "coordinator.key", COORDINATOR_ORIGIN)
        node_keys = {
            state: _party_key(keys_dir / f"node-{state}.key", node_origin(state))
            for state in STATES.values()
        }
        auditor_key = _party_key(keys_dir / "auditor.key", AUDITOR)
        for old in [*workdir.glob("audit-*"), workdir / "auditor-state"]:
            if old.is_dir():
                shutil.rmtree(old)
        addresses: dict[str, str] = {}
        for i, state in enumerate(STATES.values()):
            db = workdir / f"{state}.sqlite"
            db.unlink(missing_ok=True)
            seed_register(
                db, state, records, seed=1000 + i, dimension=DIM, model_id=MODEL, today=today
            )
            cfg = workdir / f"node-{state}.toml"
            cfg.write_text(
                f'[node]\nmember_state = "{state}"\ndatabase = "{db.name}"\n'
                f'dimension = {DIM}\nmodel_id = "{MODEL}"\nlisten = "127.0.0.1:0"\n'
                + _audit_table(
                    f"audit-{state}", f"keys/node-{state}.key", auditor_key, coordinator_key
                )
            )
        _say(
            f"1. registers: {records:,} synthetic records per node, "
            f"{time.perf_counter() - t0:.1f}s; signing keys for {len(STATES)} nodes, the "
            "coordinator and an auditor"
        )

        t0 = time.perf_counter()
        procs = {}
        for state in STATES.values():
            port_file = workdir / f"node-{state}.port"
            port_file.unlink(missing_ok=True)
            procs[state] = (
                stack.enter_context(
                    _process(
                        [
                            "node",
                            "serve",
                            "--config",
                            str(workdir / f"node-{state}.toml"),
                            "--port-file",
                            str(port_file),
                        ],
                        workdir / f"node-{state}.log",
                    )
                ),
                port_file,
            )
        for state, (proc, port_file) in procs.items():
            addresses[state] = f"127.0.0.1:{_wait_port(port_file, proc)}"
        nodes_toml = _nodes_tables(addresses, node_keys)
        ccfg = workdir / "coordinator.toml"
        ccfg.write_text(
            f'[coordinator]\nlisten = "127.0.0.1:0"\nmodel_id = "{MODEL}"\ndimension = {DIM}\n'
            f"threshold = 0.45\nnode_deadline_seconds = 30.0\n"
            + _audit_table("audit-coordinator", "keys/coordinator.key", auditor_key)
            + nodes_toml
        )
        cport = workdir / "coordinator.port"
        cport.unlink(missing_ok=True)
        cproc = stack.enter_context(
            _process(
                ["coordinator", "serve", "--config", str(ccfg), "--port-file", str(cport)],
                workdir / "coordinator.log",
            )
        )
        coordinator = f"127.0.0.1:{_wait_port(cport, cproc)}"
        auditor_toml = workdir / "auditor.toml"
        _auditor_toml(auditor_toml, coordinator, coordinator_key, nodes_toml)
        _say(
            f"2. servers up ({time.perf_counter() - t0:.1f}s): "
            + ", ".join(f"node {r}={s} at {addresses[s]}" for r, s in STATES.items())
            + f", coordinator at {coordinator}"
        )

        t0 = time.perf_counter()
        pictures = folder_photos(photos) if photos else packaged_photos()
        pipeline = FacePipeline()
        if pipeline.model_id != MODEL or pipeline.dimension != DIM:
            raise InvalidInput("the demo registers are built for the default SFace model")
        at_b = pipeline.template(pictures.enrol_b)
        at_c = pipeline.template(pictures.enrol_c)
        probe = pipeline.template(pictures.probe)
        stranger = pipeline.template(pictures.impostor, pick=pictures.impostor_pick)
        _say(
            f"3. face templates from {pictures.source}: detected, aligned and embedded with "
            f"{pipeline.model_id} ({time.perf_counter() - t0:.1f}s)"
        )
        a, b, c = STATES["A"], STATES["B"], STATES["C"]
        _enroll(
            addresses[b],
            b,
            at_b,
            f"{b}-2026-LMP-004711",
            Category.IRREGULAR_CROSSING,
            crossing,
            "Lampedusa",
        )
        _enroll(
            addresses[c],
            c,
            at_c,
            f"{c}-2026-PAR-118822",
            Category.APPLICANT,
            application_c,
            "Paris",
        )
        _say(
            f"4. enrolled the traveller at {b} as irregular_crossing ({crossing}) and at {c} "
            f"as applicant ({application_c}), each from its own photograph"
        )

        # Who asks is on the record of every party: the unit and the officer.
        requester = Requester(coordinator, a, unit=f"{a}-dublin-unit", operator=f"{a}-officer-12")
        stack.callback(requester.close)
        header = requester.header(Purpose.ASYLUM_DUBLIN, LEGAL_BASIS, f"{a}-BAMF-2026-5512")
        report = requester.lookup(probe, header)
        _say(
            f"5. {a} registered its public keys for this key epoch "
            f"({report.key_bytes_sent / 1e6:.1f} MB, once), encrypted the template of another "
            f"photograph "
            f"({report.bytes_sent / 1e3:.0f} KB) and looked it up; the nodes answered with "
            f"masked match bits only: "
            + "; ".join(
                f"{n.member_state} {n.outcome} ({n.record_count:,} records, "
                f"{n.matches} match{'es' if n.matches != 1 else ''}, {n.elapsed_ms:.0f} ms)"
                for n in report.nodes
            )
        )
        # Two experts of the requesting state compared the candidates before any detail is
        # asked for (human verification, logged with their ids).
        verifiers = [f"{a}-expert-1", f"{a}-expert-2"]
        resolved = requester.resolve(report, today.isoformat(), verifiers)
        _say(
            f"   {len(report.matches)} candidate hits verified by {' and '.join(verifiers)}; "
            "the coordinator logged that before asking for their details"
        )
        for h in resolved.hits:
            _say(
                f"   hit detail: {h['member_state']} {h['category']} {h['reference']} "
                f"{h['event_date']} {h['event_place']}"
            )
        _say(f"6. decision: {resolved.explanation}")

        control_header = requester.header(Purpose.ASYLUM_DUBLIN, LEGAL_BASIS, f"{a}-BAMF-2026-5513")
        control = requester.lookup(stranger, control_header)
        _say(
            f"7. control: a photograph of someone else gives {len(control.matches)} hits "
            f"(keys reused: {control.key_bytes_sent} key bytes sent)"
        )

        summary: dict[str, Any] = lookup_summary(report, resolved)
        summary["control_hits"] = len(control.matches)
        summary["records_per_node"] = records
        summary["photos"] = pictures.source
        summary["timings_ms"]["total_ms"] = round((time.perf_counter() - started) * 1e3, 1)
        _say(
            f"8. audit: each party signed its own log ({', '.join(sorted(node_keys))}, "
            f"coordinator; keys in {keys_dir}); the nodes searched only for requests on the "
            f"coordinator's record, in checkpoints they cosigned. Auditor config: {auditor_toml}"
            + (" (removed with the temporary work dir: use --workdir to keep it)" if temporary
               else "")
        )  # fmt: skip
        # An outside auditor now verifies every log and cross-checks the federation, as
        # `fedmatch audit verify --config auditor.toml` does.
        from fedmatch.audit.auditor import load_auditor_config, run_audit

        audit = run_audit(load_auditor_config(auditor_toml))
        _say(
            "   audit verify: "
            + ", ".join(
                f"{origin.rsplit('/', 1)[-1]} {p['tree_size']} entries"
                + ("" if p["verified"] else " NOT VERIFIED")
                for origin, p in audit.summary["parties"].items()
            )
            + f"; {audit.summary['searches_checked']} node searches matched to authorizations,"
            f" {audit.summary['violations']} violations"
        )
        summary["audit"] = {
            k: audit.summary[k]
            for k in ("ok", "violations", "searches_checked", "hit_reveals_checked")
        }
        ok = (
            resolved.responsible_state == b
            and resolved.procedure == "take_charge"
            and resolved.complete
            and len(control.matches) == 0
            and audit.ok
        )
        _say("9. shutting down")
    print(json.dumps(summary), flush=True)
    return 0 if ok else 1
