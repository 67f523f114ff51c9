"""``fedmatch keys generate``: a requester's HE key pair in a file of mode 0600."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fedmatch.cli.common import EXIT_INPUT, EXIT_OK

__all__ = ["add_parsers", "run"]


def add_parsers(sub: Any) -> None:
    """Register ``keys`` on the ``fedmatch`` subcommands."""
    keys = sub.add_parser("keys", help="requester key management")
    keys.set_defaults(run=run)
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    kgen = keys_sub.add_parser("generate", help="generate a requester key pair (file mode 0600)")
    kgen.add_argument("--out", type=Path, required=True, help="key file to write")
    kgen.add_argument(
        "--param-set",
        default="",
        metavar="NAME",
        help="the HE parameter set the federation announces (default: the default set; "
        "the coordinator's coordinator.he_param_set)",
    )


def run(args: argparse.Namespace) -> int:
    from fedmatch.he.keypair import RequesterKeys
    from fedmatch.he.params import DEFAULT_PARAM_SET, PARAM_SETS
    from fedmatch.requester.keyfile import save_keys

    name = args.param_set or DEFAULT_PARAM_SET.name
    if name not in PARAM_SETS:
        known = ", ".join(sorted(PARAM_SETS))
        print(f"error: --param-set must be one of {known}", file=sys.stderr)
        return EXIT_INPUT
    save_keys(RequesterKeys.generate(PARAM_SETS[name]), args.out)
    print(f"wrote {args.out}")
    return EXIT_OK
