"""``fedmatch desk``: the verifier desk (:mod:`fedmatch.desk`).

- ``fedmatch desk protect-key --key K.key --out K.key.enc [--passphrase-file F]``: encrypt a
  person's signing key under a passphrase (asked twice when no file is given);
- ``fedmatch desk serve --config desk.toml``: serve the desk until Ctrl-C, printing its URL.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from fedmatch.cli.common import EXIT_OK, log_format_arg
from fedmatch.errors import InvalidInput

__all__ = ["add_parsers", "run_protect_key", "run_serve"]


def add_parsers(sub: Any) -> None:
    """Register ``desk`` on the ``fedmatch`` subcommands."""
    desk = sub.add_parser("desk", help="the verifier desk: a web application for hit verifiers")
    desk_sub = desk.add_subparsers(dest="desk_command", required=True, metavar="ACTION")

    p = desk_sub.add_parser(
        "protect-key", help="encrypt a signing key under a passphrase (scrypt + AES-GCM)"
    )
    p.set_defaults(run=run_protect_key)
    p.add_argument("--key", type=Path, required=True, help="the plain key file (skey, mode 0600)")
    p.add_argument("--out", type=Path, required=True, help="protected key file to write (new)")
    p.add_argument(
        "--passphrase-file",
        type=Path,
        help="read the passphrase from this file's first line (default: ask twice)",
    )

    s = desk_sub.add_parser("serve", help="serve the desk until Ctrl-C")
    s.set_defaults(run=run_serve)
    s.add_argument("--config", type=Path, required=True, help="desk.toml")
    s.add_argument("--listen", help="host:port (overrides desk.listen)")
    s.add_argument(
        "--dev-insecure",
        action="store_true",
        help="development only: allow plain HTTP on an address other than loopback (warned)",
    )
    log_format_arg(s)


def _passphrase(path: Path | None) -> str:
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise InvalidInput(
                f"--passphrase-file {path} could not be read ({exc.strerror})"
            ) from None
        if not lines or not lines[0]:
            raise InvalidInput(f"--passphrase-file {path} is empty")
        return lines[0]
    first = getpass.getpass("Passphrase: ")
    if getpass.getpass("Passphrase again: ") != first:
        raise InvalidInput("the two passphrases differ")
    return first


def run_protect_key(args: argparse.Namespace) -> int:
    from fedmatch.pki.keystore import protect_file

    signer = protect_file(args.key, args.out, _passphrase(args.passphrase_file))
    print(f"wrote {args.out} (key {signer.name}, id {signer.key_id.hex()}); "
          f"delete the plain key {args.key} once the desk works")  # fmt: skip
    return EXIT_OK


def run_serve(args: argparse.Namespace) -> int:
    from fedmatch.desk.app import create_app
    from fedmatch.desk.config import load_config
    from fedmatch.desk.server import serve

    config = load_config(args.config, {"listen": args.listen})
    app = create_app(config)

    def ready(url: str) -> None:
        print(f"desk serving on {url} (Ctrl-C stops it)", flush=True)

    serve(app, config, insecure=args.dev_insecure, ready=ready)
    print("desk stopped", file=sys.stderr)
    return EXIT_OK
