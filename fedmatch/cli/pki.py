"""``fedmatch pki``: the federation's certificate authorities (root, one per member state and
EU), certificates issued with their bound signing keys, certificate requests (``csr``,
``sign``: each state keeps its own CA key), revocation, and what a certificate names
(:mod:`fedmatch.pki`).

A CA key's passphrase comes from ``--passphrase-env VARIABLE`` or ``--passphrase-file FILE``,
never from the command line. ``init`` and ``intermediate`` write an unencrypted CA key only
with ``--dev-unencrypted-key`` (the examples on one machine), warned about at every such run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fedmatch.cli.common import EXIT_OK
from fedmatch.errors import InvalidInput

__all__ = ["add_parsers", "run"]


_INSTANCE_HELP = (
    "one DNS label telling holders of a role apart, e.g. desk7; for --role officer (a "
    "person's certificate) required: the officer's id, which their requests name"
)
_UNENCRYPTED_WARNING = (
    "WARNING: --dev-unencrypted-key: {path} is written UNENCRYPTED. For development only: a "
    "CA key is encrypted with a passphrase and kept offline (or in an HSM) in production"
)


def _dev_unencrypted_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dev-unencrypted-key", action="store_true",
        help="development only: write the new CA key unencrypted (warned about)",
    )  # fmt: skip


def _new_ca_key_passphrase(passphrase: bytes | None, dev_unencrypted: bool, how: str) -> None:
    """Refuse to write a CA key in clear unless asked to, loudly, by the dev flag."""
    if passphrase is None and not dev_unencrypted:
        raise InvalidInput(
            f"a CA key is written encrypted: give {how} (or, for development only, "
            "--dev-unencrypted-key)"
        )
    if passphrase is not None and dev_unencrypted:
        raise InvalidInput("--dev-unencrypted-key contradicts a passphrase for the new key")


def _passphrase_args(p: argparse.ArgumentParser, what: str) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--passphrase-env", metavar="VARIABLE", help=f"environment variable holding {what}"
    )
    group.add_argument(
        "--passphrase-file", type=Path, metavar="FILE",
        help=f"file (mode 0600) whose first line is {what}",
    )  # fmt: skip


def add_parsers(sub: Any) -> None:
    """Register ``pki`` and its actions on the ``fedmatch`` subcommands."""
    pki = sub.add_parser("pki", help="federation certificate authorities and TLS certificates")
    pki.set_defaults(run=run)
    pki_sub = pki.add_subparsers(dest="pki_command", required=True, metavar="ACTION")
    pinit = pki_sub.add_parser(
        "init", help="create the federation root CA (root.key, root.pem, an empty root.crl)"
    )
    pinit.add_argument("--dir", type=Path, required=True, help="directory of the root CA")
    pinit.add_argument("--days", type=int, default=3650, help="validity in days")
    _passphrase_args(pinit, "the passphrase that encrypts root.key")
    _dev_unencrypted_arg(pinit)
    pinter = pki_sub.add_parser(
        "intermediate",
        help="create the CA of a member state (or EU), signed by the root, with an empty CRL",
    )
    pinter.add_argument("--dir", type=Path, required=True, help="directory of the root CA")
    pinter.add_argument("--scope", required=True, help="member state code (IT, DE, ...) or EU")
    pinter.add_argument(
        "--out", type=Path, help="directory for <scope>.key/.pem/.crl (default: --dir)"
    )
    pinter.add_argument("--days", type=int, default=1825, help="validity in days")
    _passphrase_args(pinter, "the root key's passphrase")
    new = pinter.add_mutually_exclusive_group()
    new.add_argument(
        "--new-passphrase-env", metavar="VARIABLE",
        help="environment variable holding the passphrase that encrypts the new <scope>.key",
    )  # fmt: skip
    new.add_argument(
        "--new-passphrase-file", type=Path, metavar="FILE",
        help="file (mode 0600) whose first line encrypts the new <scope>.key",
    )  # fmt: skip
    _dev_unencrypted_arg(pinter)
    pissue = pki_sub.add_parser(
        "issue", help="issue a TLS certificate ([instance.]role.scope.fedmatch.eu)"
    )
    pissue.add_argument(
        "--dir", type=Path, required=True, help="CA directory with <scope>.key/.pem and root.pem"
    )
    pissue.add_argument(
        "--role", required=True, help="node, coordinator, auditor, operator, verifier or officer"
    )
    pissue.add_argument("--scope", required=True, help="member state code or EU")
    pissue.add_argument("--instance", default="", help=_INSTANCE_HELP)
    pissue.add_argument(
        "--signing-key", type=Path, required=True,
        help="the holder's Ed25519 signing key file, bound into the certificate; created "
        "(mode 0600, named fedmatch/node/<STATE>, fedmatch/coordinator or the DNS name) if missing",
    )  # fmt: skip
    pissue.add_argument(
        "--out", type=Path, required=True, help="writes key.pem (0600), cert.pem, ca.pem here"
    )
    pissue.add_argument("--days", type=int, default=90, help="validity in days")
    _passphrase_args(pissue, "the scope CA key's passphrase")
    pcsr = pki_sub.add_parser(
        "csr",
        help="generate a key and a certificate request: a state CA's (no --role; the key "
        "encrypted) for the root, or a party's for its state's CA",
    )
    pcsr.add_argument("--scope", required=True, help="member state code (IT, DE, ...) or EU")
    pcsr.add_argument("--role", help="node, coordinator, auditor, operator, verifier or officer")
    pcsr.add_argument("--instance", default="", help=_INSTANCE_HELP)
    pcsr.add_argument(
        "--signing-key", type=Path,
        help="(with --role) the holder's Ed25519 signing key file, bound into the "
        "certificate; created (mode 0600) if missing",
    )  # fmt: skip
    pcsr.add_argument(
        "--out", type=Path, required=True,
        help="writes <scope>.key and <scope>.csr (a CA), or key.pem and request.csr here",
    )  # fmt: skip
    _passphrase_args(pcsr, "the passphrase that encrypts the new key")
    pcsr.add_argument(
        "--key-unencrypted", action="store_true",
        help="(with --role) write key.pem in clear, mode 0600, as `pki issue` does (else "
        "encrypted: name its passphrase in [tls] key_passphrase_env or key_passphrase_file)",
    )  # fmt: skip
    psign = pki_sub.add_parser(
        "sign",
        help="sign a request: the root signs a state CA's, a state's CA its parties'",
    )
    psign.add_argument("--dir", type=Path, required=True, help="directory of the signing CA")
    psign.add_argument("--ca", required=True, help="'root', or the scope of the signing CA")
    psign.add_argument("--csr", type=Path, required=True, help="the request (PEM)")
    psign.add_argument(
        "--scope", help="(with --ca root) the state the request comes from: IT, DE, ... or EU"
    )
    psign.add_argument("--role", help="(leaf requests) refuse any other role than this one")
    psign.add_argument(
        "--out", type=Path, required=True,
        help="writes <scope>.pem and root.pem (a CA), or cert.pem and ca.pem here",
    )  # fmt: skip
    psign.add_argument("--days", type=int, help="validity in days (CA 1825, leaf 90)")
    _passphrase_args(psign, "the signing CA key's passphrase")
    pcrl = pki_sub.add_parser("crl", help="(re)publish a CA's CRL, empty if it has none")
    pcrl.add_argument("--dir", type=Path, required=True, help="directory of the CA")
    pcrl.add_argument("--ca", required=True, help="'root' or the scope of the CA")
    _passphrase_args(pcrl, "the CA key's passphrase")
    prevoke = pki_sub.add_parser("revoke", help="add a certificate to its CA's CRL")
    prevoke.add_argument("--dir", type=Path, required=True, help="directory of the issuing CA")
    prevoke.add_argument(
        "--scope", required=True, help="scope of the issuing CA, or 'root' for an intermediate"
    )
    prevoke.add_argument("--serial", required=True, help="serial number (decimal or 0x hex)")
    _passphrase_args(prevoke, "the CA key's passphrase")
    pshow = pki_sub.add_parser("show", help="print the identity a certificate names (JSON)")
    pshow.add_argument("--cert", type=Path, required=True, help="PEM certificate (or chain)")


def run(args: argparse.Namespace) -> int:
    from cryptography import x509

    from fedmatch.audit.note import NoteSigner
    from fedmatch.pki import (
        Identity,
        create_intermediate,
        create_root,
        identity_from_certificate,
        issue,
        publish_crl,
        revoke,
        signing_key_name,
    )
    from fedmatch.pki.ca import ROOT
    from fedmatch.pki.csr import request_ca, request_leaf, sign_ca_request, sign_leaf_request
    from fedmatch.pki.passphrase import read_passphrase

    passphrase = read_passphrase(getattr(args, "passphrase_env", None),
                                 getattr(args, "passphrase_file", None))  # fmt: skip

    def described(identity: Identity) -> dict[str, Any]:
        # The serial is a string: a 159-bit integer loses digits in most JSON readers.
        return {
            "dns": identity.dns, "role": identity.role, "scope": identity.scope,
            "member_state": identity.member_state, "instance": identity.instance,
            "signing_key": identity.signing_key.hex(), "serial": str(identity.serial),
            "not_after": identity.not_after.isoformat(),
        }  # fmt: skip

    # A CA starts with an empty CRL, so that every party can list it in [tls] crls from the
    # start; `pki revoke` extends it (and parties re-read it when it changes).
    if args.pki_command == "init":
        _new_ca_key_passphrase(
            passphrase, args.dev_unencrypted_key, "--passphrase-env or --passphrase-file"
        )
        root_pem = create_root(args.dir, args.days, passphrase=passphrase)
        if passphrase is None:
            print(_UNENCRYPTED_WARNING.format(path=args.dir / "root.key"), file=sys.stderr)
        print(f"wrote {root_pem} and {publish_crl(args.dir, ROOT, passphrase=passphrase)}")
        return EXIT_OK
    if args.pki_command == "intermediate":
        out = args.out or args.dir
        new = read_passphrase(args.new_passphrase_env, args.new_passphrase_file)
        _new_ca_key_passphrase(
            new, args.dev_unencrypted_key, "--new-passphrase-env or --new-passphrase-file"
        )
        ca_pem = create_intermediate(
            args.dir, args.scope, out, args.days, root_passphrase=passphrase, passphrase=new
        )
        if new is None:
            print(_UNENCRYPTED_WARNING.format(path=ca_pem.with_suffix(".key")), file=sys.stderr)
        print(f"wrote {ca_pem} and {publish_crl(out, args.scope, passphrase=new)}")
        return EXIT_OK
    if args.pki_command == "csr":
        if args.role is None:
            if args.signing_key is not None or args.instance or args.key_unencrypted:
                raise InvalidInput(
                    "a CA request takes no --signing-key, --instance or --key-unencrypted "
                    "(give --role for a party's request)"
                )
            if passphrase is None:
                raise InvalidInput(
                    "a CA key is written only encrypted: give --passphrase-env or --passphrase-file"
                )
            key, csr = request_ca(args.out, args.scope, passphrase)
        else:
            if args.signing_key is None:
                raise InvalidInput("a party's request needs --signing-key (the key it binds)")
            if (passphrase is None) != args.key_unencrypted:
                raise InvalidInput("give either a passphrase for key.pem or --key-unencrypted")
            if not args.signing_key.exists():
                name = signing_key_name(args.role, args.scope, args.instance)
                args.signing_key.parent.mkdir(parents=True, exist_ok=True)
                NoteSigner.generate(name).save(args.signing_key)
                print(f"created signing key {args.signing_key} ({name})", file=sys.stderr)
            key, csr = request_leaf(
                args.out, args.role, args.scope, args.instance, args.signing_key, passphrase
            )
        print(json.dumps({"key": str(key), "csr": str(csr)}))
        return EXIT_OK
    if args.pki_command == "sign":
        if args.ca.lower() == ROOT:
            if args.scope is None or args.role is not None:
                raise InvalidInput("--ca root signs a state CA's request: give --scope, no --role")
            ca_pem = sign_ca_request(
                args.dir, args.csr, args.scope, args.out, args.days or 1825, passphrase
            )
            print(json.dumps({"certificate": str(ca_pem), "root": str(args.out / "root.pem")}))
            return EXIT_OK
        if args.scope is not None:
            raise InvalidInput("--scope is for --ca root; a state's CA signs its own scope")
        files = sign_leaf_request(
            args.dir, args.ca, args.csr, args.out, args.days or 90, passphrase, args.role
        )
        leaf = x509.load_pem_x509_certificates(files.chain.read_bytes())[0]
        paths = {"chain": str(files.chain), "root": str(files.root)}
        print(json.dumps({**described(identity_from_certificate(leaf)), **paths}))
        return EXIT_OK
    if args.pki_command == "crl":
        print(json.dumps({"crl": str(publish_crl(args.dir, args.ca, passphrase=passphrase))}))
        return EXIT_OK
    if args.pki_command == "issue":
        if not args.signing_key.exists():
            name = signing_key_name(args.role, args.scope, args.instance)
            args.signing_key.parent.mkdir(parents=True, exist_ok=True)
            NoteSigner.generate(name).save(args.signing_key)
            print(f"created signing key {args.signing_key} ({name})", file=sys.stderr)
        files = issue(
            args.dir, args.role, args.scope, args.instance, args.signing_key, args.out,
            args.days, ca_passphrase=passphrase,
        )  # fmt: skip
        leaf = x509.load_pem_x509_certificates(files.chain.read_bytes())[0]
        paths = {"key": str(files.key), "chain": str(files.chain), "root": str(files.root)}
        print(json.dumps({**described(identity_from_certificate(leaf)), **paths}))
        return EXIT_OK
    if args.pki_command == "revoke":
        text = args.serial.strip().lower()
        try:
            serial = int(text[2:], 16) if text.startswith("0x") else int(text, 10)
        except ValueError:
            raise InvalidInput("--serial must be a decimal or 0x-prefixed hex number") from None
        crl = revoke(args.dir, args.scope, serial, passphrase=passphrase)
        print(json.dumps({"revoked": str(serial), "crl": str(crl)}))
        return EXIT_OK
    try:
        data = args.cert.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"--cert {args.cert} could not be read ({exc.strerror})") from None
    try:
        cert = x509.load_pem_x509_certificates(data)[0]
    except (ValueError, IndexError):
        raise InvalidInput(f"--cert {args.cert} is not a PEM certificate") from None
    print(json.dumps(described(identity_from_certificate(cert))))
    return EXIT_OK
