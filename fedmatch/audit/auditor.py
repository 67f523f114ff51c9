"""The auditor: verify every party's log against saved state, then the federation as a whole.

For each party (the coordinator and every node), trusting none of them:

1. fetch a fresh checkpoint and verify its signature (the coordinator's must also carry
   enough valid witness cosignatures from the nodes);
2. compare it with the checkpoint this auditor accepted last time: never a smaller tree,
   never the same size with another root (a fork), and a consistency proof in between;
3. compare it with the checkpoints other auditors accepted (``peers``): a party that shows
   two auditors two histories is caught here;
4. fetch every entry, recompute the tree (which checks the inclusion of every entry read),
   and compare the prefix with the copy kept from the last audit; check each entry's
   signature, index and party, and a sample of the party's own inclusion proofs;
5. cross-check the federation (:mod:`fedmatch.audit.crosscheck`).

When something fails, both signed checkpoints and the proof (or the differing entries)
are written to ``<state_dir>/evidence/`` and named in the report. State only advances for
a party that verified completely.

A node restored from a backup shows a rollback or a fork. The report then says how to tell
an announced restore from tampering: the auditor checks the node's signed announcement and
acknowledges it (``fedmatch audit accept-restore``, :mod:`fedmatch.audit.acknowledge`),
which makes the backup's checkpoint its accepted state; verification continues from there
and any later rollback or fork is reported as before. Restores this auditor acknowledged
are named (never excused) in the findings they may explain: a peer auditor that still holds
the history before the restore (each auditor acknowledges for itself), and a search the
node answered between the backup and the restore, whose entry the restore dropped.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from fedmatch.audit.client import AuditClient
from fedmatch.audit.crosscheck import Finding, cross_check
from fedmatch.audit.entry import SignedEntry
from fedmatch.audit.errors import AuditVerificationError
from fedmatch.audit.log import scan_records
from fedmatch.audit.merkle import MerkleTree, leaf_hash, verify_consistency, verify_inclusion
from fedmatch.audit.note import (
    Checkpoint,
    CosignatureVerifier,
    Note,
    NoteSigner,
    NoteVerifier,
    cosignatures,
    open_checkpoint,
)
from fedmatch.audit.party import COORDINATOR_ORIGIN, node_origin
from fedmatch.audit.restores import load_acknowledged, peer_acknowledged
from fedmatch.audit.stats import SMALL_CELL_THRESHOLD, federation_stats
from fedmatch.config import read_toml
from fedmatch.domain import check_member_state
from fedmatch.errors import ConfigError, FedmatchError, InvalidInput
from fedmatch.fileio import write_atomically
from fedmatch.pki.names import dns_name
from fedmatch.protocol.transport import Security, load_security

__all__ = [
    "AuditResult",
    "AuditorConfig",
    "PartyEntry",
    "load_auditor_config",
    "run_audit",
    "run_stats",
]

_SPOT_CHECKS = 16
_LOCATE_LIMIT = 2000


@dataclass(frozen=True)
class PartyEntry:
    """A party as the auditor knows it: where it serves, its log name, its key."""

    name: str  # "coordinator" or a member state code
    origin: str
    address: str
    key: str

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier.from_vkey(self.key)

    @property
    def dns(self) -> str:
        """The name its TLS certificate carries."""
        if self.name == "coordinator":
            return dns_name("coordinator", "eu")
        return dns_name("node", self.name)


@dataclass(frozen=True)
class AuditorConfig:
    name: str
    signing_key: Path
    state_dir: Path
    coordinator: PartyEntry
    nodes: tuple[PartyEntry, ...]
    # Valid node cosignatures required on the coordinator's checkpoint.
    witness_quorum: int = 1
    # Searches authorized this recently may still be in flight.
    grace_seconds: float = 300.0
    # State directories of other auditors whose accepted checkpoints are compared.
    peers: tuple[Path, ...] = ()
    timeout_seconds: float = 30.0
    # Distinct verifiers each revealed hit needs (the coordinator's policy, checked again).
    hit_verifiers_required: int = 2
    # The auditor's own mTLS material ([tls]); None only with --dev-insecure.
    security: Security | None = None

    @property
    def parties(self) -> tuple[PartyEntry, ...]:
        return (self.coordinator, *self.nodes)


def _party(item: Any, name: str, origin: str, where: str) -> PartyEntry:
    if not isinstance(item, dict):
        raise ConfigError(f"{where} must be a table")
    for key in ("address", "key"):
        if not isinstance(item.get(key), str) or not item[key]:
            raise ConfigError(f"{where}.{key} is required")
    try:
        verifier = NoteVerifier.from_vkey(item["key"])
    except (AuditVerificationError, InvalidInput):
        raise ConfigError(f"{where}.key is not a verifier key") from None
    if verifier.name != origin:
        raise ConfigError(f"{where}.key is named {verifier.name!r}; expected {origin!r}")
    return PartyEntry(name, origin, item["address"], item["key"])


def load_auditor_config(path: Path, insecure: bool = False) -> AuditorConfig:
    raw = read_toml(path)
    section = raw.get("auditor")
    if not isinstance(section, dict):
        raise ConfigError("[auditor] is required")
    known = {
        "name",
        "signing_key",
        "state_dir",
        "witness_quorum",
        "grace_seconds",
        "peers",
        "timeout_seconds",
        "hit_verifiers_required",
    }
    unknown = set(section) - known
    if unknown:
        raise ConfigError(f"auditor.{sorted(unknown)[0]}: unknown key")
    for key in ("name", "signing_key", "state_dir"):
        if not isinstance(section.get(key), str) or not section[key]:
            raise ConfigError(f"auditor.{key} is required")

    def rel(value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else path.parent / p

    nodes = []
    for i, item in enumerate(raw.get("nodes", [])):
        state = item.get("member_state", "") if isinstance(item, dict) else ""
        try:
            check_member_state(state)
        except FedmatchError:
            raise ConfigError(f"nodes[{i}].member_state is not a member state") from None
        nodes.append(_party(item, state, node_origin(state), f"nodes[{i}]"))
    try:
        config = AuditorConfig(
            name=section["name"],
            signing_key=rel(section["signing_key"]),
            state_dir=rel(section["state_dir"]),
            coordinator=_party(
                raw.get("coordinator"), "coordinator", COORDINATOR_ORIGIN, "coordinator"
            ),
            nodes=tuple(nodes),
            witness_quorum=int(section.get("witness_quorum", 1)),
            grace_seconds=float(section.get("grace_seconds", 300.0)),
            peers=tuple(rel(p) for p in section.get("peers", [])),
            timeout_seconds=float(section.get("timeout_seconds", 30.0)),
            hit_verifiers_required=int(section.get("hit_verifiers_required", 2)),
            security=load_security(path, insecure),
        )
    except (TypeError, ValueError):
        raise ConfigError("auditor: a number is malformed") from None
    if not 0 <= config.witness_quorum <= len(nodes):
        raise ConfigError("auditor.witness_quorum must be between 0 and the number of nodes")
    return config


# -- saved state -------------------------------------------------------------------------


def _safe(origin: str) -> str:
    return origin.replace("/", "_")


class PartyState:
    """What this auditor accepted of one party: the signed checkpoint and the entries."""

    def __init__(self, state_dir: Path, origin: str) -> None:
        self.directory = state_dir / _safe(origin)
        self.checkpoint_path = self.directory / "checkpoint"
        self.entries_path = self.directory / "entries.bin"

    def checkpoint(self) -> bytes | None:
        try:
            return self.checkpoint_path.read_bytes()
        except FileNotFoundError:
            return None

    def entries(self) -> list[bytes]:
        try:
            data = self.entries_path.read_bytes()
        except FileNotFoundError:
            return []
        records, _ = scan_records(data)
        return [data[start : start + length] for start, length in records]

    def save(self, note: bytes, entries: list[bytes], key: str = "") -> None:
        """Keep the accepted checkpoint and entries and, when given, the party's verifier
        key, so that the auditor's offline tools (:mod:`fedmatch.audit.readers`) need
        neither the configuration nor the network."""
        import struct
        import zlib

        self.directory.mkdir(parents=True, exist_ok=True)
        frames = b"".join(struct.pack(">II", len(e), zlib.crc32(e)) + e for e in entries)
        write_atomically(self.entries_path, frames)
        write_atomically(self.checkpoint_path, note)
        if key:
            write_atomically(self.directory / "vkey", key.encode() + b"\n", mode=0o644)


# -- verification ------------------------------------------------------------------------


@dataclass
class PartyResult:
    party: PartyEntry
    verified: bool = False
    size: int = 0
    root: str = ""
    cosigners: list[str] = field(default_factory=list)
    entries: list[SignedEntry] = field(default_factory=list)


@dataclass
class AuditResult:
    ok: bool
    report: str
    summary: dict[str, Any]
    findings: list[Finding]


class _Auditor:
    def __init__(self, config: AuditorConfig) -> None:
        self.config = config
        self.signer = NoteSigner.load(config.signing_key)
        if self.signer.name != config.name:
            raise ConfigError(
                f"auditor.signing_key is named {self.signer.name!r}, not {config.name!r}"
            )
        self.findings: list[Finding] = []
        self.evidence: list[str] = []
        self.now = time.time()
        # Restores of a party's log this auditor acknowledged (`audit accept-restore`).
        self.restores, bad = load_acknowledged(config.state_dir, self.signer.verifier())
        for path in bad:
            self.findings.append(
                Finding(
                    "warning", "auditor", "bad-acknowledgement",
                    f"{path} is not an acknowledgement this auditor signed: ignored",
                )
            )  # fmt: skip

    def problem(
        self, party: PartyEntry, kind: str, message: str, evidence: dict[str, Any] | None = None
    ) -> None:
        path = ""
        if evidence is not None:
            directory = self.config.state_dir / "evidence"
            directory.mkdir(parents=True, exist_ok=True)
            p = directory / f"{int(self.now * 1000)}-{_safe(party.origin)}-{kind}.json"
            p.write_text(json.dumps({"party": party.origin, "kind": kind, **evidence}, indent=2))
            path = str(p)
            self.evidence.append(path)
        self.findings.append(Finding("violation", party.name, kind, message, path))

    def verify_party(self, party: PartyEntry) -> PartyResult:
        result = PartyResult(party)
        try:
            security = self.config.security
            credentials = security.channel_credentials() if security is not None else None
            with AuditClient(
                party.address,
                self.signer,
                self.config.timeout_seconds,
                credentials,
                party.dns if credentials is not None else None,
            ) as client:
                self._verify_with(client, party, result)
        except grpc.RpcError as err:
            code = err.code()
            self.problem(
                party,
                "unreachable",
                f"could not audit {party.origin}: {code.name}: {(err.details() or '')[:200]}",
            )
        return result

    def _verify_with(self, client: AuditClient, party: PartyEntry, result: PartyResult) -> None:
        note = client.checkpoint(fresh=True)
        try:
            checkpoint, parsed = open_checkpoint(note, party.verifier, party.origin)
        except AuditVerificationError as exc:
            self.problem(
                party,
                "bad-checkpoint-signature",
                f"{party.origin} served a checkpoint that its key did not sign: {exc}",
                {"presented_checkpoint": note.decode(errors="replace")},
            )
            return
        result.size, result.root = checkpoint.size, base64.b64encode(checkpoint.root).decode()
        if party is self.config.coordinator:
            result.cosigners = self._witnesses(parsed, party)
        state = PartyState(self.config.state_dir, party.origin)
        if not self._consistent_with(client, party, checkpoint, note, state.checkpoint(), "saved"):
            return
        for peer in self.config.peers:
            peer_note = PartyState(peer, party.origin).checkpoint()
            if not self._consistent_with(client, party, checkpoint, note, peer_note, "peer", peer):
                return
        entries = client.entries(0, checkpoint.size)
        if not self._entries_ok(client, party, checkpoint, note, entries, state.entries()):
            return
        result.entries = [SignedEntry.decode(e) for e in entries]
        result.verified = True
        state.save(note, entries, party.key)

    def _witnesses(self, note: Note, party: PartyEntry) -> list[str]:
        keys = [
            CosignatureVerifier.from_public_key(n.verifier.name, n.verifier.public_key_bytes())
            for n in self.config.nodes
        ]
        try:
            signed = sorted(cosignatures(note, keys))
        except AuditVerificationError as exc:
            self.problem(
                party,
                "bad-cosignature",
                f"a witness cosignature is invalid: {exc}",
                {"presented_checkpoint": note.text().decode(errors="replace")},
            )
            return []
        if len(signed) < self.config.witness_quorum:
            self.findings.append(
                Finding(
                    "violation",
                    party.name,
                    "too-few-witnesses",
                    f"coordinator checkpoint has {len(signed)} witness cosignatures, "
                    f"{self.config.witness_quorum} required",
                )
            )
        return signed

    def _consistent_with(
        self,
        client: AuditClient,
        party: PartyEntry,
        new: Checkpoint,
        new_note: bytes,
        old_note: bytes | None,
        whose: str,
        peer: Path | None = None,
    ) -> bool:
        """``new`` must extend ``old_note`` (a checkpoint accepted before, here or by a peer)."""
        if old_note is None:
            return True
        try:
            old, _ = open_checkpoint(old_note, party.verifier, party.origin)
        except AuditVerificationError:
            if whose == "peer":
                return True  # a peer's file we cannot read proves nothing either way
            raise
        evidence: dict[str, Any] = {
            f"{whose}_checkpoint": old_note.decode(),
            "presented_checkpoint": new_note.decode(),
        }

        # What may explain a finding (never a reason to skip it), worded only for one.
        def hint() -> str:
            if whose == "saved":
                return self._restore_hint(party)
            return self._peer_hint(party, old, peer)

        if new.size == old.size:
            if new.root != old.root:
                self.problem(
                    party,
                    f"fork-{whose}",
                    f"{party.origin} signed two different trees of size {new.size} "
                    f"({whose} checkpoint vs now){hint()}",
                    evidence,
                )
                return False
            return True
        if new.size < old.size and whose == "saved":
            self.problem(
                party,
                "rollback",
                f"{party.origin} now shows {new.size} entries; it showed {old.size} "
                f"before (entries removed or history rewritten){hint()}",
                evidence,
            )
            return False
        small, large = (old, new) if old.size < new.size else (new, old)
        if small.size == 0:
            return True
        try:
            proof = client.consistency_proof(small.size, large.size)
        except grpc.RpcError as err:
            self.problem(
                party,
                f"no-consistency-proof-{whose}",
                f"{party.origin} gave no consistency proof from {small.size} to "
                f"{large.size}: {err.code().name}{hint()}",
                evidence,
            )
            return False
        try:
            verify_consistency(small.size, large.size, proof, small.root, large.root)
        except AuditVerificationError as exc:
            evidence["consistency_proof"] = [base64.b64encode(h).decode() for h in proof]
            self.problem(
                party,
                f"inconsistent-{whose}",
                f"{party.origin}: tree of size {large.size} does not extend the "
                f"{whose} one of size {small.size}: {exc}{hint()}",
                evidence,
            )
            return False
        return True

    def _restore_hint(self, party: PartyEntry) -> str:
        """How to tell an announced restore from tampering (a rollback or fork of a node)."""
        if party is self.config.coordinator:
            return ""
        return (
            f". If {party.name} restored its node from a backup, it announces the restore "
            f"with a signed file (<audit directory>/restores/<time>.json): check it and "
            f"acknowledge it with `fedmatch audit accept-restore --config <auditor.toml> "
            f"--announcement FILE`; a rollback nobody announced is tampering"
        )

    def _peer_hint(self, party: PartyEntry, old: Checkpoint, peer: Path | None) -> str:
        """When this auditor acknowledged a restore of the party and the peer did not: the
        peer's checkpoint may be of the history before it (the finding stands)."""
        acks = self.restores.get(party.origin)
        if not acks or peer is None or peer_acknowledged(peer, acks[-1].announcement_sha256):
            return ""
        ack = acks[-1]
        before = ""
        if ack.superseded_root(old.size) == old.root:
            before = f"; its checkpoint (size {old.size}) is of the history before that restore"
        return (
            f". This auditor acknowledged an announced restore of {party.origin} to the "
            f"backup's checkpoint of size {ack.backup_size} ({ack.path}); the peer auditor "
            f"({peer}) has not acknowledged it{before}: each auditor acknowledges a restore "
            f"itself (`fedmatch audit accept-restore`), until then their checkpoints conflict"
        )

    def _entries_ok(
        self,
        client: AuditClient,
        party: PartyEntry,
        checkpoint: Checkpoint,
        note: bytes,
        entries: list[bytes],
        kept: list[bytes],
    ) -> bool:
        for i, old in enumerate(kept[: len(entries)]):
            if entries[i] != old:
                self.problem(
                    party,
                    "entry-changed",
                    f"{party.origin}: entry {i} differs from the copy verified in an earlier audit",
                    {
                        "index": i,
                        "verified_copy": old.decode(errors="replace"),
                        "presented": entries[i].decode(errors="replace"),
                        "presented_checkpoint": note.decode(),
                    },
                )
                return False
        tree = MerkleTree()
        tree.extend(leaf_hash(e) for e in entries)
        if len(entries) != checkpoint.size or tree.root() != checkpoint.root:
            index = self._locate(client, checkpoint, entries)
            self.problem(
                party,
                "entries-do-not-match-checkpoint",
                f"{party.origin}: the entries served do not make the signed tree of "
                f"size {checkpoint.size}"
                + (f"; first bad entry: {index}" if index is not None else ""),
                {
                    "presented_checkpoint": note.decode(),
                    "first_bad_index": index,
                    "served_entries": len(entries),
                },
            )
            return False
        verifier = party.verifier
        last_time = 0
        for i, raw in enumerate(entries):
            try:
                entry = SignedEntry.decode(raw)
                entry.verify(verifier)
                if entry.seq != i or entry.party != party.origin:
                    raise AuditVerificationError(
                        f"entry at {i} says index {entry.seq} of {entry.party[:60]!r}"
                    )
            except AuditVerificationError as exc:
                self.problem(
                    party,
                    "bad-entry",
                    f"{party.origin}: entry {i}: {exc}",
                    {"index": i, "entry": raw.decode(errors="replace")},
                )
                return False
            if entry.unix_ms + 1000 < last_time:
                self.findings.append(
                    Finding(
                        "warning", party.name, "clock", f"entry {i} is dated before entry {i - 1}"
                    )
                )
            last_time = max(last_time, entry.unix_ms)
        # The party's own proofs must agree with the entries it served.
        # Unpredictable, so a party cannot prepare honest proofs for just the checked ones.
        rng = secrets.SystemRandom()
        sample: set[int] = set()
        if checkpoint.size:
            sample = {checkpoint.size - 1}
            sample.update(rng.randrange(checkpoint.size) for _ in range(_SPOT_CHECKS))
        for index in sorted(sample):
            proof = client.inclusion_proof(index, checkpoint.size)
            try:
                verify_inclusion(
                    leaf_hash(entries[index]), index, checkpoint.size, proof, checkpoint.root
                )
            except AuditVerificationError as exc:
                self.problem(
                    party,
                    "bad-inclusion-proof",
                    f"{party.origin}: its inclusion proof for entry {index} fails: {exc}",
                    {"index": index, "presented_checkpoint": note.decode()},
                )
                return False
        return True

    def _locate(
        self, client: AuditClient, checkpoint: Checkpoint, entries: list[bytes]
    ) -> int | None:
        """The first served entry that the party's own inclusion proof does not support."""
        for index in range(min(len(entries), checkpoint.size, _LOCATE_LIMIT)):
            try:
                proof = client.inclusion_proof(index, checkpoint.size)
                verify_inclusion(
                    leaf_hash(entries[index]), index, checkpoint.size, proof, checkpoint.root
                )
            except (AuditVerificationError, grpc.RpcError):
                return index
        if len(entries) < checkpoint.size:
            return len(entries)
        return None


def run_audit(config: AuditorConfig) -> AuditResult:
    auditor = _Auditor(config)
    results = {p.name: auditor.verify_party(p) for p in config.parties}
    verified = {name: r.entries for name, r in results.items() if r.verified}
    checks = cross_check(
        verified.get("coordinator"),
        {n.name: verified.get(n.name) for n in config.nodes},
        now=auditor.now,
        grace_seconds=config.grace_seconds,
        hit_verifiers_required=config.hit_verifiers_required,
        restores={n.name: auditor.restores.get(n.origin, []) for n in config.nodes},
    )
    findings = auditor.findings + checks.findings
    violations = [f for f in findings if f.severity == "violation"]
    ok = not violations and all(r.verified for r in results.values())
    summary = {
        "ok": ok,
        "auditor": config.name,
        "parties": {
            r.party.origin: {
                "verified": r.verified,
                "tree_size": r.size,
                "root": r.root,
                **({"witnesses": r.cosigners} if r.party is config.coordinator else {}),
            }
            for r in results.values()
        },
        "searches_checked": checks.searches,
        "hit_reveals_checked": checks.reveals,
        "registers_checked": checks.registers,
        "violations": len(violations),
        "warnings": sum(f.severity == "warning" for f in findings),
        "evidence": auditor.evidence,
    }
    return AuditResult(ok, _report(config, results, findings, ok), summary, findings)


def _report(
    config: AuditorConfig, results: dict[str, PartyResult], findings: list[Finding], ok: bool
) -> str:
    lines = [f"fedmatch audit by {config.name}", ""]
    for r in results.values():
        status = "verified" if r.verified else "NOT VERIFIED"
        extra = f", witnesses: {', '.join(r.cosigners) or 'none'}" if r.cosigners else ""
        lines.append(f"  {r.party.origin}: {status}, {r.size} entries{extra}")
    lines.append("")
    if not findings:
        lines.append("No findings.")
    for f in findings:
        where = f" (evidence: {f.evidence})" if f.evidence else ""
        lines.append(f"  {f.severity.upper()} [{f.party}] {f.kind}: {f.message}{where}")
    lines += ["", "RESULT: " + ("all logs verified and consistent" if ok else "FAILED")]
    return "\n".join(lines)


def run_stats(config: AuditorConfig, threshold: int = SMALL_CELL_THRESHOLD) -> dict[str, Any]:
    """Aggregates over the entries this auditor has verified (run ``audit verify`` first),
    small cells suppressed below ``threshold`` (see :mod:`fedmatch.audit.stats`)."""
    entries: dict[str, list[SignedEntry]] = {}
    for party in config.parties:
        raw = PartyState(config.state_dir, party.origin).entries()
        entries[party.name] = [SignedEntry.decode(e) for e in raw]
    if not entries["coordinator"]:
        raise InvalidInput("no verified coordinator log in the auditor state: run audit verify")
    nodes = {n.name: entries[n.name] for n in config.nodes}
    return federation_stats(entries["coordinator"], nodes, threshold)
