"""``fedmatch keys generate``: a requester's HE key pair in a file of mode 0600."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedmatch.cli.common import EXIT_OK

__all__ = ["add_parsers", "run"]


def add_parsers(sub: Any) -> None:
    """Register ``keys`` on the ``fedmatch`` subcommands."""
    keys = sub.add_parser("keys", help="requester key management")
    keys.set_defaults(run=run)
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    kgen = keys_sub.add_parser("generate", help="generate a requester key pair (file mode 0600)")
    kgen.add_argument("--out", type=Path, required=True, help="key file to write")


def run(args: argparse.Namespace) -> int:
    from fedmatch.he.keypair import RequesterKeys
    from fedmatch.requester.keyfile import save_keys

    save_keys(RequesterKeys.generate(), args.out)
    print(f"wrote {args.out}")
    return EXIT_OK
