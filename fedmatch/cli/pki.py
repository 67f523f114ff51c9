"""``fedmatch pki``: the federation's certificate authorities (root, one per member state and
EU), certificates issued with their bound signing keys, revocation, and what a certificate
names (:mod:`fedmatch.pki`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fedmatch.cli.common import EXIT_OK
from fedmatch.errors import InvalidInput

__all__ = ["add_parsers", "run"]


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
    pissue = pki_sub.add_parser(
        "issue", help="issue a TLS certificate ([instance.]role.scope.fedmatch.eu)"
    )
    pissue.add_argument(
        "--dir", type=Path, required=True, help="CA directory with <scope>.key/.pem and root.pem"
    )
    pissue.add_argument(
        "--role", required=True, help="node, coordinator, auditor, operator or verifier"
    )
    pissue.add_argument("--scope", required=True, help="member state code or EU")
    pissue.add_argument("--instance", default="", help="optional DNS label, e.g. desk7")
    pissue.add_argument(
        "--signing-key", type=Path, required=True,
        help="the holder's Ed25519 signing key file, bound into the certificate; created "
        "(mode 0600, named fedmatch/node/<STATE>, fedmatch/coordinator or the DNS name) if missing",
    )  # fmt: skip
    pissue.add_argument(
        "--out", type=Path, required=True, help="writes key.pem (0600), cert.pem, ca.pem here"
    )
    pissue.add_argument("--days", type=int, default=90, help="validity in days")
    prevoke = pki_sub.add_parser("revoke", help="add a certificate to its CA's CRL")
    prevoke.add_argument("--dir", type=Path, required=True, help="directory of the issuing CA")
    prevoke.add_argument(
        "--scope", required=True, help="scope of the issuing CA, or 'root' for an intermediate"
    )
    prevoke.add_argument("--serial", required=True, help="serial number (decimal or 0x hex)")
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
        root_pem = create_root(args.dir, args.days)
        print(f"wrote {root_pem} and {publish_crl(args.dir, ROOT)}")
        return EXIT_OK
    if args.pki_command == "intermediate":
        out = args.out or args.dir
        ca_pem = create_intermediate(args.dir, args.scope, out, args.days)
        print(f"wrote {ca_pem} and {publish_crl(out, args.scope)}")
        return EXIT_OK
    if args.pki_command == "issue":
        if not args.signing_key.exists():
            name = signing_key_name(args.role, args.scope, args.instance)
            args.signing_key.parent.mkdir(parents=True, exist_ok=True)
            NoteSigner.generate(name).save(args.signing_key)
            print(f"created signing key {args.signing_key} ({name})", file=sys.stderr)
        files = issue(
            args.dir, args.role, args.scope, args.instance, args.signing_key, args.out, args.days
        )
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
        crl = revoke(args.dir, args.scope, serial)
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
