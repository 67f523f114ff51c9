"""``fedmatch audit``: party and auditor keys, verification of every party's log with the
federation's cross-checks, publishable statistics, the auditor's watch loop, the
acknowledgement of a node's announced restore (``accept-restore``), and the auditor's tools
to read logs and carry proofs offline: ``entries``, ``proof``, ``bundle`` and ``verify
--bundle`` (:mod:`fedmatch.audit`, :mod:`fedmatch.audit.proofs`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fedmatch.cli.common import EXIT_AUDIT_FAILED, EXIT_OK, insecure_arg, warn_insecure
from fedmatch.errors import ConfigError

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
    averify.add_argument(
        "--config", type=Path,
        help="auditor TOML file (required unless --bundle; with --bundle: its keys only)",
    )  # fmt: skip
    averify.add_argument("--report", type=Path, help="also write the report to this file")
    averify.add_argument(
        "--bundle", type=Path,
        help="verify a search bundle (`audit bundle`) offline instead of the live logs",
    )  # fmt: skip
    _trust_args(averify)
    averify.add_argument(
        "--trust-bundle-keys", action="store_true",
        help="check the bundle against the keys it carries (proves only that it is "
        "self-consistent; compare the key ids with the parties' published keys)",
    )  # fmt: skip
    insecure_arg(averify)
    aentries = audit_sub.add_parser(
        "entries", help="list a party's log entries, verified, as JSON lines (with filters)"
    )
    _source_args(aentries)
    aentries.add_argument(
        "--party", action="append", default=[],
        help="coordinator or a member state code (repeatable; default: every party)",
    )  # fmt: skip
    aentries.add_argument(
        "--kind", action="append", default=[], help="entry kind, e.g. search_answered (repeatable)"
    )
    aentries.add_argument("--query-id", default="", help="only entries about this query")
    aentries.add_argument("--since", help="entries at or after this ISO 8601 time (UTC)")
    aentries.add_argument("--until", help="entries before this ISO 8601 time (UTC)")
    aproof = audit_sub.add_parser(
        "proof",
        help="an inclusion or consistency proof with the signed checkpoint(s), as JSON; "
        "--verify FILE checks one offline",
    )
    _source_args(aproof)
    aproof.add_argument("--party", help="coordinator or a member state code")
    which = aproof.add_mutually_exclusive_group()
    which.add_argument("--index", type=int, help="inclusion proof of the entry at this index")
    which.add_argument("--leaf-hash", help="inclusion proof of the entry with this leaf hash (hex)")
    which.add_argument(
        "--size1", type=int, help="consistency proof from this tree size (to --size2)"
    )
    which.add_argument("--verify", type=Path, help="verify a proof file offline")
    aproof.add_argument(
        "--size2", type=int, help="consistency proof to this tree size (default: the signed size)"
    )
    aproof.add_argument(
        "--old-checkpoint", type=Path,
        help="the party's signed checkpoint of size --size1, to include (default: the one "
        "saved in the auditor's state, when it has that size)",
    )  # fmt: skip
    aproof.add_argument("--out", type=Path, help="write the proof here (default: stdout)")
    _trust_args(aproof, state_dir=False)
    abundle = audit_sub.add_parser(
        "bundle",
        help="everything needed to verify one search offline: every party's entries about "
        "the query, their inclusion proofs and signed checkpoints",
    )
    _source_args(abundle)
    abundle.add_argument("--query-id", required=True, help="the search's query id")
    abundle.add_argument("--out", type=Path, required=True, help="bundle file to write")
    aaccept = audit_sub.add_parser(
        "accept-restore",
        help="acknowledge a node's announced restore: check its signed announcement and "
        "continue from the backup's checkpoint (the old state is kept as evidence)",
    )
    aaccept.add_argument("--config", type=Path, required=True, help="auditor TOML file")
    aaccept.add_argument(
        "--announcement", type=Path, required=True,
        help="the node's signed announcement (<audit directory>/restores/<time>.json)",
    )  # fmt: skip
    aaccept.add_argument(
        "--state-dir", type=Path, help="the auditor state directory (default: the config's)"
    )
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


def _source_args(p: argparse.ArgumentParser) -> None:
    """Where the logs are read: live with the auditor's configuration, or offline from the
    copy `audit verify` kept (the configuration's state directory, or --state-dir)."""
    p.add_argument("--config", type=Path, help="auditor TOML file (live, unless --offline)")
    p.add_argument(
        "--offline", action="store_true",
        help="with --config: read the auditor's verified copy in its state_dir, no network",
    )  # fmt: skip
    p.add_argument(
        "--state-dir", type=Path,
        help="read the verified copy in this auditor state directory (offline, no config)",
    )  # fmt: skip
    insecure_arg(p)


def _trust_args(p: argparse.ArgumentParser, state_dir: bool = True) -> None:
    """Which party keys offline verification trusts (besides --config's)."""
    if state_dir:
        p.add_argument(
            "--state-dir", type=Path,
            help="trust the party keys `audit verify` saved in this auditor state directory",
        )  # fmt: skip
    p.add_argument(
        "--key", action="append", default=[], metavar="VKEY",
        help="a party's verifier key to trust (repeatable)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if args.audit_command in ("entries", "proof", "bundle") or (
        args.audit_command == "verify" and args.bundle is not None
    ):
        from fedmatch.cli.audit_tools import run_tool

        return run_tool(args)
    if args.audit_command == "keygen":
        from fedmatch.audit.party import create_party_key

        vkey = create_party_key(args.out, args.name)
        print(f"wrote {args.out}; verifier key (give it to those who verify you):", file=sys.stderr)
        print(vkey)
        return EXIT_OK
    from fedmatch.audit.auditor import load_auditor_config, run_audit, run_stats

    if args.config is None:
        raise ConfigError(f"audit {args.audit_command} needs --config")
    if args.audit_command == "accept-restore":
        return _accept_restore(args, load_auditor_config(args.config, True))
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


def _accept_restore(args: argparse.Namespace, config: Any) -> int:
    """``audit accept-restore``: no connection is made (the keys and the saved state only)."""
    from fedmatch.audit.acknowledge import accept_restore
    from fedmatch.audit.errors import AuditVerificationError

    try:
        done = accept_restore(config, args.announcement, args.state_dir)
    except AuditVerificationError as exc:
        print(json.dumps({"accepted": False, "error": str(exc)}))
        print(f"fedmatch: restore announcement REFUSED: {exc}", file=sys.stderr)
        return EXIT_AUDIT_FAILED
    print(json.dumps(done))
    if not done.get("already_acknowledged"):
        print(
            f"accepted the restore of {done['party']}: verification continues from the "
            f"backup's checkpoint ({done['backup_checkpoint_size']} entries; "
            f"{done['entries_dropped']} verified entries dropped, kept in "
            f"{done['previous_state']})",
            file=sys.stderr,
        )
    return EXIT_OK
