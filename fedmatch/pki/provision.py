"""Provision a whole local federation's PKI in one directory: what the demo, the load
benchmark and the tests use (an operator runs `fedmatch pki ...` step by step instead).

Layout under ``directory``: ``ca/`` (root, one intermediate per scope, CRLs), ``keys/`` (each
party's Ed25519 signing key, mode 0600) and ``tls/<party>/`` (key.pem, cert.pem, ca.pem).
Party names: ``coordinator``, ``node-IT``, ``operator-IT`` (a workstation: its mTLS
channel), ``officer-<id>-IT`` (an official: the key that signs their requests),
``verifier-IT``, ``verifier-<person>-IT`` (hit verifiers), ``auditor-<name>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from fedmatch.audit.note import NoteSigner
from fedmatch.pki.ca import ROOT, TlsFiles, create_intermediate, create_root, issue, publish_crl
from fedmatch.pki.names import identity_from_certificate, signing_key_name

__all__ = ["PartyFiles", "provision"]


@dataclass(frozen=True)
class PartyFiles:
    name: str
    tls: TlsFiles
    signing_key: Path
    vkey: str

    def signer(self) -> NoteSigner:
        return NoteSigner.load(self.signing_key)


def _reusable(chain: Path, signer: NoteSigner) -> bool:
    """An existing certificate is reused only while it has a day left and binds this key
    (a work directory kept for months, or a regenerated key, gets a fresh one)."""
    if not chain.exists():
        return False
    leaf = x509.load_pem_x509_certificates(chain.read_bytes())[0]
    left = leaf.not_valid_after_utc - datetime.now(UTC)
    return left > timedelta(days=1) and (
        identity_from_certificate(leaf).signing_key == signer.public_key_bytes()
    )


def _party(
    directory: Path, ca: Path, name: str, role: str, scope: str, instance: str = ""
) -> PartyFiles:
    key_name = signing_key_name(role, scope, instance)
    key_path = directory / "keys" / f"{name}.key"
    if key_path.exists():
        signer = NoteSigner.load(key_path)
    else:
        key_path.parent.mkdir(parents=True, exist_ok=True)
        signer = NoteSigner.generate(key_name)
        signer.save(key_path)
    out = directory / "tls" / name
    if _reusable(out / "cert.pem", signer):
        files = TlsFiles(out / "key.pem", out / "cert.pem", out / "ca.pem")
    else:
        files = issue(ca, role, scope, instance, signer, out)
    crls = tuple(sorted(ca.glob("*.crl")))
    return PartyFiles(
        name, TlsFiles(files.key, files.chain, files.root, crls), key_path, signer.vkey()
    )


def provision(
    directory: Path,
    states: Sequence[str],
    operators: Sequence[str] | None = None,
    verifiers: Sequence[str] = (),
    auditors: Sequence[str] = ("edps",),
    experts: Mapping[str, Sequence[str]] | None = None,
    officers: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, PartyFiles]:
    """Create (or reuse) everything; operators default to one workstation per state.
    ``experts`` maps a state to the names of its hit verifiers, people each holding a
    ``verifier`` certificate (``anna.verifier.de.fedmatch.eu``, party ``verifier-anna-DE``);
    ``officers`` a state to the ids of its officials, each holding an ``officer``
    certificate (``maria.officer.it.fedmatch.eu``, party ``officer-maria-IT``) whose key
    signs their requests."""
    ca = directory / "ca"
    if not (ca / f"{ROOT}.pem").exists():
        create_root(ca)
        publish_crl(ca, ROOT)
    experts = experts or {}
    officers = officers or {}
    scopes = sorted(
        {s.lower() for s in (*states, *(operators or ()), *verifiers, *experts, *officers)} | {"eu"}
    )
    for scope in scopes:
        if not (ca / f"{scope}.pem").exists():
            create_intermediate(ca, scope, ca)
            publish_crl(ca, scope)
    parties = {"coordinator": _party(directory, ca, "coordinator", "coordinator", "eu")}
    for state in states:
        parties[f"node-{state}"] = _party(directory, ca, f"node-{state}", "node", state)
    for state in states if operators is None else operators:
        parties[f"operator-{state}"] = _party(
            directory, ca, f"operator-{state}", "operator", state, "desk1"
        )
    for state in verifiers:
        parties[f"verifier-{state}"] = _party(
            directory, ca, f"verifier-{state}", "verifier", state, "court"
        )
    for state, people in experts.items():
        for person in people:
            parties[f"verifier-{person}-{state}"] = _party(
                directory, ca, f"verifier-{person}-{state}", "verifier", state, person
            )
    for state, ids in officers.items():
        for officer in ids:
            parties[f"officer-{officer}-{state}"] = _party(
                directory, ca, f"officer-{officer}-{state}", "officer", state, officer
            )
    for name in auditors:
        parties[f"auditor-{name}"] = _party(directory, ca, f"auditor-{name}", "auditor", "eu", name)
    return parties
