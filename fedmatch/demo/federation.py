"""``fedmatch demo``: a three-state federation on this machine, end to end.

Three node processes and a coordinator process, real gRPC servers on 127.0.0.1 (free ports),
each node with a synthetic background register (random unit vectors standing in for other
people's SFace templates). One traveller is enrolled from photographs at node B as an
irregular border crossing and at node C as an asylum applicant (later); a different
photograph of the traveller is then looked up from node A, and a photograph of someone else
as a control (see :mod:`fedmatch.demo.photos` for which photographs). The last stdout line
is JSON: decision, per-node outcomes, timings and bytes.

The demo first provisions a federation PKI in the work directory (as the `fedmatch pki`
commands would, step by step): a root CA, one CA per member state and one for the EU, and a
certificate and an Ed25519 signing key for every node, the coordinator, one operator
workstation per state and an auditor (``ca/``, ``keys/``, ``tls/<party>/``). Every channel
is mutual TLS, every party checks its peer's certificate and role, and every lookup and
resolve is signed by the requesting operator. Every party signs its own audit log with its
key; nodes witness the coordinator's log and search only for requests on its record. Two
people of the requesting state verify the candidate hits before their details are asked
for. The work directory also gets an ``auditor.toml`` for ``fedmatch audit verify`` and an
``operator-<STATE>.toml`` per state for ``fedmatch lookup|enroll --config``.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedmatch.biometrics.pipeline import FacePipeline
from fedmatch.demo.photos import folder_photos, packaged_photos
from fedmatch.demo.seed import seed_register
from fedmatch.domain import Category, Purpose, QueryHeader, Sex
from fedmatch.errors import InvalidInput
from fedmatch.ops.subprocs import fedmatch_process, wait_port
from fedmatch.pki.ca import TlsFiles
from fedmatch.pki.provision import PartyFiles, provision
from fedmatch.protocol.statement import RequestSigner
from fedmatch.protocol.transport import Security
from fedmatch.protocol.verification import HitKey, VerdictSigner
from fedmatch.requester import Requester
from fedmatch.requester.enrolment import EnrolmentRecord, NodeEnroller
from fedmatch.requester.report import lookup_summary

if TYPE_CHECKING:
    from node.sealing import KeyEncryptionKey

__all__ = ["run_demo"]

MODEL = "sface-2021dec-int8bq"
DIM = 128
# A = requesting state, B = state of first irregular entry, C = state of a later application.
STATES = {"A": "DE", "B": "IT", "C": "FR"}
# The requesting state's hit verifiers (certificate names expert1.verifier.de.fedmatch.eu...).
DEMO_EXPERTS = ("expert1", "expert2")
LEGAL_BASIS = "Reg. (EU) 2024/1358 Art. 27; Reg. (EU) 2024/1351"
AUDITOR = "demo"  # the PKI's party "auditor-demo", key name demo.auditor.eu.fedmatch.eu
# Checkpoints are published (and witnessed) this often without traffic.
CHECKPOINT_SECONDS = 2.0


def _say(text: str) -> None:
    print(text, flush=True)


# The demo traveller's birth date (an adult: enrolment needs a birth date, minimum age 6).
TRAVELLER_BIRTH_DATE = dt.date(1998, 4, 17)


def _enroll(
    address: str, operator_tls: TlsFiles, state: str, template: np.ndarray, reference: str,
    category: Category, event_date: dt.date, place: str,
) -> int:  # fmt: skip
    """Enrol at ``state``'s node as an operator of that state (its mTLS certificate)."""
    operator = f"{state}-officer-7"
    header = QueryHeader(
        secrets.token_hex(16), state, Purpose.ASYLUM_DUBLIN, LEGAL_BASIS, reference,
        unit=f"{state}-enrolment", operator=operator,
    )  # fmt: skip
    record = EnrolmentRecord(
        reference, category, event_date, place, event_date, Sex.MALE, operator,
        birth_date=TRAVELLER_BIRTH_DATE,
    )  # fmt: skip
    credentials = Security(operator_tls).channel_credentials()
    with NodeEnroller(address, MODEL, credentials=credentials, member_state=state) as node:
        return node.enroll(header, record, template)


def _toml(value: str) -> str:
    """A TOML basic string (the values written here are paths, addresses and keys)."""
    return json.dumps(value)


def _rel(path: Path, base: Path) -> str:
    """``path`` relative to the work directory, where every TOML file of the demo lives."""
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def _tls_table(files: TlsFiles, base: Path) -> str:
    """A party's ``[tls]`` table: its key and chain, the federation root, and the CRLs of
    the root and of every scope CA (re-read by the party when they change)."""
    crls = ", ".join(_toml(_rel(c, base)) for c in files.crls)
    return (
        f"\n[tls]\nkey = {_toml(_rel(files.key, base))}\nchain = {_toml(_rel(files.chain, base))}\n"
        f"root = {_toml(_rel(files.root, base))}\ncrls = [{crls}]\n"
    )


def _operator_toml(path: Path, party: PartyFiles, base: Path) -> None:
    path.write_text(
        f"# An operator workstation of {party.name.split('-', 1)[1]}: "
        "`fedmatch lookup|enroll --config` this file.\n# Paths are relative to this file.\n"
        f"[operator]\nsigning_key = {_toml(_rel(party.signing_key, base))}\n"
        + _tls_table(party.tls, base)
    )


def _audit_table(directory: str, key: str, auditor: str, coordinator_key: str = "") -> str:
    table = (
        f"\n[audit]\ndirectory = {_toml(directory)}\nsigning_key = {_toml(key)}\n"
        f"auditors = [{_toml(auditor)}]\ncheckpoint_interval_seconds = {CHECKPOINT_SECONDS}\n"
    )
    if coordinator_key:
        table += f"coordinator_key = {_toml(coordinator_key)}\n"
    return table


def _storage_key(workdir: Path, state: str) -> tuple[KeyEncryptionKey, str]:
    """A node's storage key (templates encrypted at rest, node/sealing.py), made once per
    work directory like the PKI, and the ``[storage]`` table naming it."""
    from node.sealing import KeyEncryptionKey, create_key_file

    path = workdir / "storage-keys" / f"{state}.key"
    kek = KeyEncryptionKey.from_file(path) if path.exists() else create_key_file(path)
    return kek, f"\n[storage]\nkey_file = {_toml(_rel(path, workdir))}\n"


def _node_register(
    workdir: Path,
    parties: dict[str, PartyFiles],
    state: str,
    records: int,
    seed: int,
    today: dt.date,
    auditor_key: str,
    coordinator_key: str,
) -> None:
    """A fresh register of ``records`` synthetic records (templates encrypted at rest) and
    the node's TOML beside it."""
    db = workdir / f"{state}.sqlite"
    db.unlink(missing_ok=True)
    kek, storage = _storage_key(workdir, state)
    seed_register(
        db, state, records, seed=seed, dimension=DIM, model_id=MODEL, today=today, kek=kek
    )
    node = parties[f"node-{state}"]
    (workdir / f"node-{state}.toml").write_text(
        f'[node]\nmember_state = "{state}"\ndatabase = "{db.name}"\n'
        f'dimension = {DIM}\nmodel_id = "{MODEL}"\nlisten = "127.0.0.1:0"\n'
        f'replay_db = "{state}.replay.sqlite"\n'
        + storage
        + _audit_table(
            f"audit-{state}", _rel(node.signing_key, workdir), auditor_key, coordinator_key
        )
        + _tls_table(node.tls, workdir)
        + '\n[policy]\nversion = "demo-2026-p1"\nrequests_per_minute = 60\n'
        "daily_quota = 1000\n"
    )


def _start_coordinator(
    stack: ExitStack,
    workdir: Path,
    parties: dict[str, PartyFiles],
    auditor_key: str,
    nodes_toml: str,
) -> str:
    """Write the coordinator's TOML, start `fedmatch coordinator serve`; its address."""
    ccfg = workdir / "coordinator.toml"
    ccfg.write_text(
        f'[coordinator]\nlisten = "127.0.0.1:0"\nmodel_id = "{MODEL}"\ndimension = {DIM}\n'
        f"threshold = 0.45\nnode_deadline_seconds = 30.0\n"
        + 'replay_db = "coordinator.replay.sqlite"\n'
        + _audit_table(
            "audit-coordinator", _rel(parties["coordinator"].signing_key, workdir), auditor_key
        )
        + _tls_table(parties["coordinator"].tls, workdir)
        + nodes_toml
    )
    cport = workdir / "coordinator.port"
    cport.unlink(missing_ok=True)
    cproc = stack.enter_context(
        fedmatch_process(
            ["coordinator", "serve", "--config", str(ccfg), "--port-file", str(cport)],
            workdir / "coordinator.log",
        )
    )
    return f"127.0.0.1:{wait_port(cport, cproc)}"


def _nodes_tables(addresses: dict[str, str], keys: dict[str, str]) -> str:
    return "".join(
        f"\n[[nodes]]\nmember_state = {_toml(s)}\naddress = {_toml(a)}\nkey = {_toml(keys[s])}\n"
        for s, a in addresses.items()
    )


def _auditor_toml(
    path: Path, auditor: PartyFiles, coordinator: str, coordinator_key: str, nodes: str
) -> None:
    base = path.parent
    path.write_text(
        "# An auditor of the demo federation: `fedmatch audit verify --config auditor.toml`\n"
        "# (it reads the parties at these addresses, over mTLS, while they run). Paths are\n"
        "# relative to this file.\n"
        f"[auditor]\nname = {_toml(auditor.signer().name)}\n"
        f"signing_key = {_toml(_rel(auditor.signing_key, base))}\n"
        f"state_dir = {_toml('auditor-state')}\n"
        + _tls_table(auditor.tls, base)
        + f"\n[coordinator]\naddress = {_toml(coordinator)}\nkey = {_toml(coordinator_key)}\n"
        + nodes
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
        # The federation PKI (as `fedmatch pki init|intermediate|issue` make it): CAs, and a
        # certificate binding an Ed25519 signing key for each party; a node's and the
        # coordinator's key also signs its audit log. A work directory used again keeps its
        # PKI; a fresh federation: the audit logs and replay stores of an earlier run in
        # this work directory are removed.
        keys_dir = workdir / "keys"
        # Two hit verifiers (people with `verifier` certificates) of the requesting state.
        experts = {STATES["A"]: DEMO_EXPERTS}
        parties = provision(workdir, list(STATES.values()), auditors=(AUDITOR,), experts=experts)
        coordinator_key = parties["coordinator"].vkey
        node_keys = {state: parties[f"node-{state}"].vkey for state in STATES.values()}
        auditor = parties[f"auditor-{AUDITOR}"]
        auditor_key = auditor.vkey
        for old in [*workdir.glob("audit-*"), workdir / "auditor-state"]:
            if old.is_dir():
                shutil.rmtree(old)
        for old in [*workdir.glob("*.replay.sqlite*"), *workdir.glob("*.notices.sqlite*")]:
            old.unlink()
        for state in STATES.values():
            _operator_toml(
                workdir / f"operator-{state}.toml", parties[f"operator-{state}"], workdir
            )
        for person in DEMO_EXPERTS:
            # For `fedmatch verify-hit --config verifier-expert1-DE.toml`.
            expert = parties[f"verifier-{person}-{STATES['A']}"]
            (workdir / f"{expert.name}.toml").write_text(
                f"# A hit verifier of {STATES['A']}: `fedmatch verify-hit --config` this file.\n"
                f"[verifier]\nsigning_key = {_toml(_rel(expert.signing_key, workdir))}\n"
                + _tls_table(expert.tls, workdir)
            )
        addresses: dict[str, str] = {}
        for i, state in enumerate(STATES.values()):
            _node_register(
                workdir, parties, state, records, 1000 + i, today, auditor_key, coordinator_key
            )
        _say(
            f"1. registers: {records:,} synthetic records per node, "
            f"{time.perf_counter() - t0:.1f}s; a federation PKI (root CA, a CA per state and "
            f"for the EU) with a TLS certificate and a bound signing key for {len(STATES)} "
            "nodes, the coordinator, an operator workstation per state and an auditor"
        )

        t0 = time.perf_counter()
        procs = {}
        for state in STATES.values():
            port_file = workdir / f"node-{state}.port"
            port_file.unlink(missing_ok=True)
            procs[state] = (
                stack.enter_context(
                    fedmatch_process(
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
            addresses[state] = f"127.0.0.1:{wait_port(port_file, proc)}"
        nodes_toml = _nodes_tables(addresses, node_keys)
        coordinator = _start_coordinator(stack, workdir, parties, auditor_key, nodes_toml)
        auditor_toml = workdir / "auditor.toml"
        _auditor_toml(auditor_toml, auditor, coordinator, coordinator_key, nodes_toml)
        _say(
            f"2. servers up ({time.perf_counter() - t0:.1f}s): "
            + ", ".join(f"node {r}={s} at {addresses[s]}" for r, s in STATES.items())
            + f", coordinator at {coordinator}; every channel is mutual TLS (each party "
            "checks its peer's certificate, role and member state)"
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
            parties[f"operator-{b}"].tls,
            b,
            at_b,
            f"{b}-2026-LMP-004711",
            Category.IRREGULAR_CROSSING,
            crossing,
            "Lampedusa",
        )
        _enroll(
            addresses[c],
            parties[f"operator-{c}"].tls,
            c,
            at_c,
            f"{c}-2026-PAR-118822",
            Category.APPLICANT,
            application_c,
            "Paris",
        )
        _say(
            f"4. enrolled the traveller at {b} as irregular_crossing ({crossing}) and at {c} "
            f"as applicant ({application_c}), each from its own photograph, by an operator "
            "of that state over mTLS"
        )

        # Who asks is on the record of every party: the unit and the officer; the operator
        # workstation signs every request with the key its certificate binds.
        workstation = parties[f"operator-{a}"]
        requester = Requester(
            coordinator,
            a,
            None,
            unit=f"{a}-dublin-unit",
            operator=f"{a}-officer-12",
            signer=RequestSigner(workstation.signer(), workstation.tls.chain.read_bytes()),
            credentials=Security(workstation.tls).channel_credentials(),
        )
        stack.callback(requester.close)
        header = requester.header(Purpose.ASYLUM_DUBLIN, LEGAL_BASIS, f"{a}-BAMF-2026-5512")
        report = requester.lookup(probe, header)
        _say(
            f"5. {a} registered its public keys for this key epoch "
            f"({report.key_bytes_sent / 1e6:.1f} MB, once), encrypted the template of another "
            f"photograph "
            f"({report.bytes_sent / 1e3:.0f} KB) and looked it up in a request signed by its "
            f"operator workstation ({workstation.signer().name}); the nodes checked the "
            "signature and answered with "
            f"masked match bits only: "
            + "; ".join(
                f"{n.member_state} {n.outcome} ({n.record_count:,} records, "
                f"{n.matches} match{'es' if n.matches != 1 else ''}, {n.elapsed_ms:.0f} ms)"
                for n in report.nodes
            )
        )
        # Two experts of the requesting state compared the candidates before any detail is
        # asked for, and each signed a verdict with the key their verifier certificate
        # binds; the coordinator and the owning node check both signatures.
        signers = [
            VerdictSigner(p.signer(), p.tls.chain.read_bytes())
            for p in (parties[f"verifier-{person}-{a}"] for person in DEMO_EXPERTS)
        ]
        verdicts = [
            s.confirm(report.header.query_id, a, HitKey(state, handle), Sex.MALE)
            for s in signers
            for state, handle in report.matches
        ]
        resolved = requester.resolve(report, today.isoformat(), verdicts)
        _say(
            f"   {len(report.matches)} candidate hits confirmed in signed verdicts by "
            f"{' and '.join(s.name for s in signers)}; the coordinator and the owning nodes "
            "checked both signatures, and the coordinator logged them before asking for details"
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
        summary["security"] = {"transport": "mtls", "signed_requests": True}
        summary["timings_ms"]["total_ms"] = round((time.perf_counter() - started) * 1e3, 1)
        _say(
            f"8. audit: each party signed its own log ({', '.join(sorted(node_keys))}, "
            f"coordinator; keys in {keys_dir}, certificates in {workdir / 'tls'}); the nodes "
            "searched only for signed requests on the "
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
