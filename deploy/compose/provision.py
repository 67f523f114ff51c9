"""Provision a local federation's PKI, keys and configuration (the compose "pki" service).

What ``fedmatch pki init|intermediate|issue`` and ``fedmatch audit keygen`` do step by step
for a real federation (deploy/README.md), in one run for a local one, with
:func:`fedmatch.pki.provision.provision`: a root CA, a CA per member state and one for the EU,
and for each party an Ed25519 signing key and a TLS certificate binding it. The CAs' private
keys stay in ``--ca`` (the pki service's own volume); each party gets only its own material,
in its own directory of ``--out`` (mounted read-only, as a subpath, by that party alone):

    <out>/<party>/tls/key.pem, cert.pem, ca.pem   its TLS key (0600), chain and the root
    <out>/<party>/keys/signing.key                its signing key (0600)
    <out>/<party>/keys/storage.key                a node's storage key (0600), made once
    <out>/<party>/crls/*.crl                      every CA's revocation list
    <out>/operator-<st>/officer/cert.pem          the state's officer's personal certificate
    <out>/operator-<st>/keys/officer.key.enc      their key, passphrase-protected (0600)
    <out>/operator-<st>/keys/officer.pass         that passphrase (0600), made once
    <out>/<party>/config/<role>.toml              ``--templates``/<party>.toml, rendered
    <out>/crls/*.crl                              the CRLs again, for Kubernetes' ConfigMap

Parties: ``coordinator``, ``auditor``, and per state (lower case) ``node-<st>``,
``operator-<st>`` and the hit verifiers ``verifier-<expert>-<st>`` (``--experts``: people who
each hold a ``verifier`` certificate and sign verdicts on candidate hits). Each operator
workstation also gets its state's officer (:data:`OFFICER`, an ``officer`` certificate whose
key signs the workstation's requests; the workstation's own certificate only makes the
channel). In a real federation the officer's key and passphrase are the officer's alone
(deploy/README.md); here, on one machine, the passphrase is a file beside it. A party's config
is ``--templates``/<party>.toml, else <role>.toml. A template's ``${coordinator_vkey}``,
``${auditor_vkey}``, ``${auditor_name}`` and ``${node_<ST>_vkey}`` become the generated
verifier keys; any other ``${...}`` is an error.

Running it again reuses every key and certificate with more than a day left (a storage key
is never replaced: it is what the register's templates are encrypted under) and copies
the current CRLs; ``--renew`` issues every party a new certificate for its same key (servers
reload theirs when the file changes). Prints one JSON line: each party's verifier key and
certificate serial.
"""

from __future__ import annotations

import argparse
import json
import secrets
import string
import sys
from pathlib import Path

from cryptography import x509

from fedmatch.fileio import write_atomically
from fedmatch.pki.names import identity_from_certificate
from fedmatch.pki.provision import PartyFiles, provision

__all__ = ["build_parser", "main", "run"]

AUDITOR = "local"
# The officer of each state's workstation: the id the operator commands log (--operator).
OFFICER = "officer-17"
_PRIVATE, _PUBLIC = 0o600, 0o644


def _role(party: str) -> str:
    return party.split("-", 1)[0]


def _copy(source: Path, target: Path, mode: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    if target.exists() and target.read_bytes() == data:
        return  # unchanged: leave it, so that nothing watching it reloads for no reason
    write_atomically(target, data, mode)


def _storage_key(path: Path) -> None:
    """A node's storage key, created once (node/sealing.py) and never replaced."""
    if path.exists():
        return
    from node.sealing import create_key_file

    create_key_file(path)


def _officer(officer: PartyFiles, home: Path) -> None:
    """The officer's certificate and protected key in their workstation's directory: the
    passphrase is made once; the key is protected again only when it changed."""
    from fedmatch.errors import FedmatchError
    from fedmatch.fileio import write_file
    from fedmatch.pki.keystore import protect, unlock

    _copy(officer.tls.chain, home / "officer" / "cert.pem", _PUBLIC)
    secret = home / "keys" / "officer.pass"
    if not secret.exists():
        secret.parent.mkdir(parents=True, exist_ok=True)
        write_file(secret, (secrets.token_urlsafe(24) + "\n").encode(), _PRIVATE, replace=False)
    passphrase = secret.read_text().splitlines()[0]
    protected = home / "keys" / "officer.key.enc"
    signer = officer.signer()
    if protected.exists():
        try:
            if unlock(protected, passphrase).public_key_bytes() == signer.public_key_bytes():
                return
        except FedmatchError:
            pass
        protected.unlink()
    protect(signer, passphrase, protected)


def _render(template: Path, values: dict[str, str]) -> str:
    text = template.read_text()
    try:
        return string.Template(text).substitute(values)
    except KeyError as exc:
        raise SystemExit(f"{template}: unknown placeholder ${{{exc.args[0]}}}") from None
    except ValueError as exc:
        raise SystemExit(f"{template}: malformed placeholder ({exc})") from None


def run(
    ca: Path,
    out: Path,
    states: list[str],
    templates: Path | None = None,
    renew: bool = False,
    experts: tuple[str, ...] = (),
) -> dict[str, dict[str, str]]:
    """Provision (or refresh) everything; returns each party's verifier key and serial."""
    if renew:
        # provision() reissues a certificate whose file is gone, for the same signing key.
        for cert in (ca / "tls").glob("*/cert.pem"):
            cert.unlink()
    made = provision(
        ca, states, auditors=(AUDITOR,), experts={s: experts for s in states},
        officers={s: (OFFICER,) for s in states},
    )  # fmt: skip
    parties: dict[str, PartyFiles] = {}
    for name, files in made.items():
        if name == f"auditor-{AUDITOR}":
            parties["auditor"] = files
        elif name.startswith(("node-", "operator-", "verifier-")):
            parties[name.lower()] = files
        elif name == "coordinator":
            parties[name] = files
    values = {
        "coordinator_vkey": parties["coordinator"].vkey,
        "auditor_vkey": parties["auditor"].vkey,
        "auditor_name": parties["auditor"].signer().name,
        **{f"node_{s.upper()}_vkey": parties[f"node-{s.lower()}"].vkey for s in states},
    }
    summary: dict[str, dict[str, str]] = {}
    for party, files in sorted(parties.items()):
        home = out / party
        _copy(files.tls.key, home / "tls" / "key.pem", _PRIVATE)
        _copy(files.tls.chain, home / "tls" / "cert.pem", _PUBLIC)
        _copy(files.tls.root, home / "tls" / "ca.pem", _PUBLIC)
        _copy(files.signing_key, home / "keys" / "signing.key", _PRIVATE)
        for crl in files.tls.crls:
            _copy(crl, home / "crls" / crl.name, _PUBLIC)
            _copy(crl, out / "crls" / crl.name, _PUBLIC)
        if _role(party) == "node":
            _storage_key(home / "keys" / "storage.key")
        if _role(party) == "operator":
            _officer(made[f"officer-{OFFICER}-{party.rsplit('-', 1)[1].upper()}"], home)
        template = None
        if templates is not None:
            for candidate in (templates / f"{party}.toml", templates / f"{_role(party)}.toml"):
                if candidate.exists():
                    template = candidate
                    break
        if template is not None:
            target = home / "config" / f"{_role(party)}.toml"
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(target, _render(template, values).encode(), _PUBLIC)
        leaf = x509.load_pem_x509_certificates(files.tls.chain.read_bytes())[0]
        identity = identity_from_certificate(leaf)
        summary[party] = {"vkey": files.vkey, "dns": identity.dns, "serial": str(identity.serial)}
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ca", type=Path, required=True, help="the CAs' directory (private)")
    parser.add_argument("--out", type=Path, required=True, help="one directory per party here")
    parser.add_argument("--states", default="DE,IT,FR", help="member states, comma-separated")
    parser.add_argument("--templates", type=Path, help="<party>.toml files to render")
    parser.add_argument("--renew", action="store_true", help="new certificates for every party")
    parser.add_argument(
        "--experts", default="expert1,expert2", help="hit verifiers of each state (names)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    states = [s.strip().upper() for s in args.states.split(",") if s.strip()]
    experts = tuple(e.strip().lower() for e in args.experts.split(",") if e.strip())
    summary = run(args.ca, args.out, states, args.templates, args.renew, experts)
    print(json.dumps({"parties": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
