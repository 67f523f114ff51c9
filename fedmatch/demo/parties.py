"""The local federation both demos run (:mod:`fedmatch.demo.federation` and
:mod:`fedmatch.demo.dublin`): each party's TOML file in the work directory (``[tls]``,
``[audit]``, ``[storage]``), synthetic registers, the node and coordinator processes, and
enrolment as an operator of a state.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from fedmatch.demo.seed import seed_node
from fedmatch.domain import Category, Purpose, QueryHeader, Sex
from fedmatch.ops.subprocs import fedmatch_process, wait_port
from fedmatch.pki.ca import TlsFiles
from fedmatch.pki.provision import PartyFiles
from fedmatch.protocol.statement import RequestSigner
from fedmatch.protocol.transport import Security
from fedmatch.requester import Requester
from fedmatch.requester.enrolment import EnrolmentRecord, NodeEnroller

if TYPE_CHECKING:
    from node.sealing import KeyEncryptionKey

__all__ = [
    "AUDITOR",
    "CHECKPOINT_SECONDS",
    "DIM",
    "LEGAL_BASIS",
    "MODEL",
    "OFFICER",
    "OFFICERS",
    "OFFICIAL",
    "TRAVELLER_BIRTH_DATE",
    "audit_table",
    "auditor_toml",
    "enroll",
    "node_register",
    "nodes_tables",
    "officer_signer",
    "operator_toml",
    "relative_path",
    "requester",
    "say",
    "start_coordinator",
    "start_nodes",
    "tls_table",
    "verifier_toml",
]

MODEL = "sface-2021dec-int8bq"
DIM = 128
LEGAL_BASIS = "Reg. (EU) 2024/1358 Art. 27; Reg. (EU) 2024/1351"
AUDITOR = "demo"  # the PKI's party "auditor-demo", key name demo.auditor.eu.fedmatch.eu
# Checkpoints are published (and witnessed) this often without traffic.
CHECKPOINT_SECONDS = 2.0
# Each state's officials, holding personal `officer` certificates (officer-12.officer.de...):
# the officer who looks up and resolves, and the official who confirms the decision.
OFFICER, OFFICIAL = "officer-12", "official-3"
OFFICERS = (OFFICER, OFFICIAL)


def say(text: str) -> None:
    print(text, flush=True)


# The demo traveller's birth date (an adult: enrolment needs a birth date, minimum age 6).
TRAVELLER_BIRTH_DATE = dt.date(1998, 4, 17)


def enroll(
    address: str, operator_tls: TlsFiles, officer: PartyFiles, state: str,
    capture: np.ndarray | bytes, reference: str, category: Category, event_date: dt.date,
    place: str, pick: int | Literal["largest"] | None = None,
) -> int:  # fmt: skip
    """Enrol at ``state``'s node as ``officer`` of that state at an operator workstation
    (its mTLS certificate makes the channel, the officer's key signs), from a photograph
    (bytes: the node makes the template and keeps the facial image) or from a template (an
    array: a record not verifiable by image, for synthetic registers)."""
    signer = officer_signer(officer)
    operator = signer.officer
    header = QueryHeader(
        secrets.token_hex(16), state, Purpose.ASYLUM_DUBLIN, LEGAL_BASIS, reference,
        unit=f"{state}-enrolment", operator=operator,
    )  # fmt: skip
    record = EnrolmentRecord(
        reference, category, event_date, place, event_date, Sex.MALE, operator,
        birth_date=TRAVELLER_BIRTH_DATE,
    )  # fmt: skip
    credentials = Security(operator_tls).channel_credentials()
    with NodeEnroller(
        address, MODEL, credentials=credentials, member_state=state, signer=signer
    ) as node:
        if isinstance(capture, bytes):
            return node.enroll_photo(header, record, capture, reference, pick)
        return node.enroll(header, record, capture)


def _toml(value: str) -> str:
    """A TOML basic string (the values written here are paths, addresses and keys)."""
    return json.dumps(value)


def relative_path(path: Path, base: Path) -> str:
    """``path`` relative to the work directory, where every TOML file of the demo lives."""
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def tls_table(files: TlsFiles, base: Path) -> str:
    """A party's ``[tls]`` table: its key and chain, the federation root, and the CRLs of
    the root and of every scope CA (re-read by the party when they change)."""
    crls = ", ".join(_toml(relative_path(c, base)) for c in files.crls)
    return (
        f"\n[tls]\nkey = {_toml(relative_path(files.key, base))}\n"
        f"chain = {_toml(relative_path(files.chain, base))}\n"
        f"root = {_toml(relative_path(files.root, base))}\ncrls = [{crls}]\n"
    )


def officer_signer(officer: PartyFiles) -> RequestSigner:
    """How an officer of the demo signs their requests: their own key and personal
    ``officer`` certificate (the workstation's certificate only makes the channel)."""
    return RequestSigner(officer.signer(), officer.tls.chain.read_bytes())


def requester(
    coordinator: str, workstation: PartyFiles, officer: PartyFiles, unit: str
) -> Requester:
    """``officer`` at ``workstation``: a client of the coordinator over the workstation's
    mTLS channel whose every request the officer's key signs (their id is the operator)."""
    state = workstation.name.rsplit("-", 1)[-1]
    return Requester(
        coordinator, state, None, unit=unit, operator="", signer=officer_signer(officer),
        credentials=Security(workstation.tls).channel_credentials(),
    )  # fmt: skip


def operator_toml(path: Path, workstation: PartyFiles, officer: PartyFiles, base: Path) -> None:
    """The operator TOML of ``workstation`` with ``officer`` at it: the workstation's
    ``[tls]`` and the officer's ``[officer]``, their key protected under a fresh passphrase
    kept in a file of mode 0600 beside it (demo keys only: a real officer keeps theirs)."""
    from fedmatch.fileio import write_file
    from fedmatch.pki.keystore import protect_file

    keys = officer.signing_key.parent
    protected, secret = keys / f"{officer.name}.key.enc", keys / f"{officer.name}.pass"
    passphrase = "demo-" + secrets.token_hex(8)
    for old in (protected, secret):
        old.unlink(missing_ok=True)  # a demo run makes its passphrase afresh
    write_file(secret, (passphrase + "\n").encode(), 0o600, replace=False)
    protect_file(officer.signing_key, protected, passphrase)
    state = workstation.name.split("-", 1)[1]
    path.write_text(
        f"# An operator workstation of {state} and its officer "
        f"({officer.name.split('-', 1)[1].rsplit('-', 1)[0]}): "
        "`fedmatch lookup|resolve|enroll --config` this file.\n"
        "# Paths are relative to this file.\n"
        f"[officer]\nchain = {_toml(relative_path(officer.tls.chain, base))}\n"
        f"key = {_toml(relative_path(protected, base))}\n"
        f"key_passphrase_file = {_toml(relative_path(secret, base))}\n"
        + tls_table(workstation.tls, base)
    )


def audit_table(directory: str, key: str, auditor: str, coordinator_key: str = "") -> str:
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
    return kek, f"\n[storage]\nkey_file = {_toml(relative_path(path, workdir))}\n"


def node_register(
    workdir: Path,
    parties: dict[str, PartyFiles],
    state: str,
    records: int,
    seed: int,
    today: dt.date,
    auditor_key: str,
    coordinator_key: str,
) -> None:
    """A fresh register of ``records`` synthetic records (templates encrypted at rest),
    logged in the node's fresh audit log, and the node's TOML beside it."""
    db = workdir / f"{state}.sqlite"
    db.unlink(missing_ok=True)
    kek, storage = _storage_key(workdir, state)
    node = parties[f"node-{state}"]
    seed_node(
        workdir / f"audit-{state}", node.signing_key, db, state, records, seed, DIM, MODEL,
        today, kek=kek,
    )  # fmt: skip
    (workdir / f"node-{state}.toml").write_text(
        f'[node]\nmember_state = "{state}"\ndatabase = "{db.name}"\n'
        f'dimension = {DIM}\nmodel_id = "{MODEL}"\nlisten = "127.0.0.1:0"\n'
        f'replay_db = "{state}.replay.sqlite"\n'
        + storage
        + audit_table(
            f"audit-{state}", relative_path(node.signing_key, workdir), auditor_key, coordinator_key
        )
        + tls_table(node.tls, workdir)
        + '\n[policy]\nversion = "demo-2026-p1"\nrequests_per_minute = 60\n'
        "daily_quota = 1000\n"
    )


def start_nodes(stack: ExitStack, workdir: Path, states: Iterable[str]) -> dict[str, str]:
    """Start `fedmatch node serve` for each state's TOML in ``workdir`` (all of them, then
    wait for each port); their addresses."""
    procs = {}
    for state in states:
        port_file = workdir / f"node-{state}.port"
        port_file.unlink(missing_ok=True)
        config = str(workdir / f"node-{state}.toml")
        proc = stack.enter_context(
            fedmatch_process(
                ["node", "serve", "--config", config, "--port-file", str(port_file)],
                workdir / f"node-{state}.log",
            )
        )
        procs[state] = (proc, port_file)
    return {s: f"127.0.0.1:{wait_port(port, proc)}" for s, (proc, port) in procs.items()}


def start_coordinator(
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
        + audit_table(
            "audit-coordinator",
            relative_path(parties["coordinator"].signing_key, workdir),
            auditor_key,
        )
        + tls_table(parties["coordinator"].tls, workdir)
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


def nodes_tables(addresses: dict[str, str], keys: dict[str, str]) -> str:
    return "".join(
        f"\n[[nodes]]\nmember_state = {_toml(s)}\naddress = {_toml(a)}\nkey = {_toml(keys[s])}\n"
        for s, a in addresses.items()
    )


def auditor_toml(
    path: Path, auditor: PartyFiles, coordinator: str, coordinator_key: str, nodes: str
) -> None:
    base = path.parent
    path.write_text(
        "# An auditor of the demo federation: `fedmatch audit verify --config auditor.toml`\n"
        "# (it reads the parties at these addresses, over mTLS, while they run). Paths are\n"
        "# relative to this file.\n"
        f"[auditor]\nname = {_toml(auditor.signer().name)}\n"
        f"signing_key = {_toml(relative_path(auditor.signing_key, base))}\n"
        f"state_dir = {_toml('auditor-state')}\n"
        + tls_table(auditor.tls, base)
        + f"\n[coordinator]\naddress = {_toml(coordinator)}\nkey = {_toml(coordinator_key)}\n"
        + nodes
    )


def verifier_toml(path: Path, expert: PartyFiles, state: str) -> None:
    """A hit verifier's file, for ``fedmatch verify-hit --config``."""
    base = path.parent
    path.write_text(
        f"# A hit verifier of {state}: `fedmatch verify-hit --config` this file.\n"
        f"[verifier]\nsigning_key = {_toml(relative_path(expert.signing_key, base))}\n"
        + tls_table(expert.tls, base)
    )
