"""``fedmatch audit``: party and auditor keys, verification of every party's log with the
federation's cross-checks, publishable statistics, and the auditor's watch loop
(:mod:`fedmatch.audit`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fedmatch.cli.common import EXIT_AUDIT_FAILED, EXIT_OK, insecure_arg, warn_insecure

__all__ = ["add_parsers", "run"]


def add_parsers(sub: Any) -> None:
    """Register ``audit`` and its actions on the ``fedmatch`` subcommands."""
    audit = sub.add_parser("audit", help="audit logs: keys, verification, statistics")
    audit.set_defaults(run=run)
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    akeygen = audit_sub.add_parser(
        "keygen", help="generate a party's or an auditor's Ed25519 signing key (mode 0600)"
    )
    akeygen.add_argument(
        "--name", required=True,
        help="key name: fedmatch/node/<STATE>, fedmatch/coordinator, or an auditor's name",
    )  # fmt: skip
    akeygen.add_argument("--out", type=Path, required=True, help="key file to create")
    averify = audit_sub.add_parser(
        "verify", help="verify every party's log and cross-check the federation"
    )
    averify.add_argument("--config", type=Path, required=True, help="auditor TOML file")
    averify.add_argument("--report", type=Path, help="also write the report to this file")
    insecure_arg(averify)
    astats = audit_sub.add_parser(
        "stats", help="publishable aggregates from the verified logs (no individual data)"
    )
    astats.add_argument("--config", type=Path, required=True, help="auditor TOML file")
    insecure_arg(astats)
    awatch = audit_sub.add_parser(
        "watch", help="run `audit verify` every --interval seconds (an auditor's service)"
    )
    awatch.add_argument("--config", type=Path, required=True, help="auditor TOML file")
    awatch.add_argument(
        "--interval", type=float, default=300.0, help="seconds from one run's start to the next"
    )
    awatch.add_argument("--runs", type=int, default=0, help="stop after this many runs (0: never)")
    insecure_arg(awatch)


def run(args: argparse.Namespace) -> int:
    if args.audit_command == "keygen":
        from fedmatch.audit.party import create_party_key

        vkey = create_party_key(args.out, args.name)
        print(f"wrote {args.out}; verifier key (give it to those who verify you):", file=sys.stderr)
        print(vkey)
        return EXIT_OK
    from fedmatch.audit.auditor import load_auditor_config, run_audit, run_stats

    insecure = warn_insecure(args, "auditor")
    config = load_auditor_config(args.config, insecure)
    if args.audit_command == "watch":
        from fedmatch.audit.watch import watch_until_signalled

        ok = watch_until_signalled(config, args.interval, args.runs)
        return EXIT_OK if ok else EXIT_AUDIT_FAILED
    if args.audit_command == "stats":
        print(json.dumps(run_stats(config)))
        return EXIT_OK
    result = run_audit(config)
    print(result.report)
    if args.report:
        args.report.write_text(result.report + "\n")
    print(json.dumps(result.summary))
    return EXIT_OK if result.ok else EXIT_AUDIT_FAILED
