"""``fedmatch audit entries|proof|bundle`` and ``audit verify --bundle``: the auditor's tools
to read logs and to carry proofs that anyone holding the parties' keys checks offline
(:mod:`fedmatch.audit.readers`, :mod:`fedmatch.audit.proofs`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from fedmatch.audit.errors import AuditVerificationError
from fedmatch.audit.note import NoteSigner, NoteVerifier
from fedmatch.audit.readers import PartyLog, local_verifiers, open_live, open_local, party_name
from fedmatch.cli.common import EXIT_AUDIT_FAILED, EXIT_OK, warn_insecure
from fedmatch.errors import ConfigError, InvalidInput

__all__ = ["run_tool"]


def run_tool(args: argparse.Namespace) -> int:
    try:
        if args.audit_command == "verify":
            return _verify_bundle(args)
        if args.audit_command == "proof" and args.verify is not None:
            return _verify_proof(args)
        with _logs(args) as logs:
            if args.audit_command == "entries":
                return _entries(args, logs)
            if args.audit_command == "proof":
                return _proof(args, logs)
            return _bundle(args, logs)
    except AuditVerificationError as exc:
        print(json.dumps({"verified": False, "error": str(exc)}))
        print(f"fedmatch: verification FAILED: {exc}", file=sys.stderr)
        return EXIT_AUDIT_FAILED


# -- reading logs ------------------------------------------------------------------------


@contextmanager
def _logs(args: argparse.Namespace) -> Iterator[list[PartyLog]]:
    """The selected parties' verified logs, live or from the auditor's saved copy."""
    wanted = set(getattr(args, "party", None) or [])
    if isinstance(getattr(args, "party", None), str):
        wanted = {args.party}
    if args.state_dir is not None:
        if args.config is not None:
            raise ConfigError("give --config or --state-dir, not both")
        verifiers = local_verifiers(args.state_dir)
        yield [open_local(args.state_dir, v) for v in _select(verifiers, wanted)]
        return
    if args.config is None:
        raise ConfigError(f"audit {args.audit_command} needs --config or --state-dir")
    from fedmatch.audit.auditor import load_auditor_config

    insecure = warn_insecure(args, "auditor") if not args.offline else False
    config = load_auditor_config(args.config, insecure or args.offline)
    parties = {p.origin: p for p in config.parties}
    chosen = _select([p.verifier for p in config.parties], wanted)
    if args.offline:
        yield [open_local(config.state_dir, v) for v in chosen]
        return
    from fedmatch.audit.client import AuditClient

    signer = NoteSigner.load(config.signing_key)
    credentials = config.security.channel_credentials() if config.security else None
    with ExitStack() as stack:
        logs = []
        for verifier in chosen:
            party = parties[verifier.name]
            # Open for the command's life: proofs are asked of the party as they are needed.
            client = stack.enter_context(
                AuditClient(
                    party.address,
                    signer,
                    config.timeout_seconds,
                    credentials,
                    party.dns if credentials is not None else None,
                )
            )
            logs.append(open_live(client, verifier))
        yield logs


def _select(verifiers: list[NoteVerifier], wanted: set[str]) -> list[NoteVerifier]:
    names = {party_name(v.name): v for v in verifiers}
    unknown = sorted(wanted - set(names))
    if unknown:
        raise InvalidInput(f"unknown party {unknown[0]!r} (known: {', '.join(sorted(names))})")
    return [v for n, v in names.items() if not wanted or n in wanted]


def _trusted(args: argparse.Namespace) -> dict[str, NoteVerifier]:
    """The keys offline verification trusts: --config's, --state-dir's, --key's."""
    keys: list[NoteVerifier] = []
    if args.config is not None:
        from fedmatch.audit.auditor import load_auditor_config

        # Only the keys are used: no connection is made, so TLS is not needed.
        keys += [p.verifier for p in load_auditor_config(args.config, True).parties]
    if getattr(args, "state_dir", None) is not None:
        keys += local_verifiers(args.state_dir)
    for vkey in args.key:
        try:
            keys.append(NoteVerifier.from_vkey(vkey))
        except (AuditVerificationError, InvalidInput):
            raise ConfigError(f"--key {vkey[:40]!r} is not a verifier key") from None
    return {v.name: v for v in keys}


def _write(doc: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(doc, indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)


def _read(path: Path, what: str) -> dict[str, Any]:
    from fedmatch.audit.proofs import load_document

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} {path}: {exc.strerror}") from None
    return load_document(data, what)


# -- commands ----------------------------------------------------------------------------


def _entries(args: argparse.Namespace, logs: list[PartyLog]) -> int:
    from fedmatch.audit.proofs import EntryFilter, entry_json

    chosen = EntryFilter.from_args(args.kind, args.query_id, args.since, args.until)
    for log in logs:
        for entry in log.decoded:
            if chosen.matches(entry):
                print(json.dumps(entry_json(entry), sort_keys=True))
    return EXIT_OK


def _proof(args: argparse.Namespace, logs: list[PartyLog]) -> int:
    from fedmatch.audit.auditor import PartyState
    from fedmatch.audit.proofs import consistency_document, inclusion_document

    if args.party is None or len(logs) != 1:
        raise InvalidInput("audit proof needs --party (coordinator or a member state code)")
    (log,) = logs
    if args.index is not None:
        doc = inclusion_document(log, args.index)
    elif args.leaf_hash is not None:
        try:
            leaf = bytes.fromhex(args.leaf_hash)
        except ValueError:
            raise InvalidInput("--leaf-hash must be hex") from None
        doc = inclusion_document(log, log.index_of(leaf))
    elif args.size1 is not None:
        old: bytes | None = None
        if args.old_checkpoint is not None:
            old = args.old_checkpoint.read_bytes()
        else:
            # The checkpoint this auditor accepted before, if it is the older tree asked for.
            state_dir = args.state_dir
            if state_dir is None and args.config is not None and not args.offline:
                from fedmatch.audit.auditor import load_auditor_config

                state_dir = load_auditor_config(args.config, True).state_dir
            saved = PartyState(state_dir, log.origin).checkpoint() if state_dir else None
            if saved is not None:
                from fedmatch.audit.note import open_checkpoint

                checkpoint, _ = open_checkpoint(saved, log.verifier, log.origin)
                old = saved if checkpoint.size == args.size1 else None
        doc = consistency_document(log, args.size1, args.size2, old)
    else:
        raise InvalidInput("audit proof needs --index, --leaf-hash, --size1 or --verify")
    _write(doc, args.out)
    return EXIT_OK


def _bundle(args: argparse.Namespace, logs: list[PartyLog]) -> int:
    from fedmatch.audit.proofs import build_bundle

    bundle = build_bundle(args.query_id, logs)
    _write(bundle, args.out)
    counts = {p["origin"]: len(p["entries"]) for p in bundle["parties"]}
    print(json.dumps({"query_id": args.query_id, "entries": counts}))
    return EXIT_OK


def _verify_proof(args: argparse.Namespace) -> int:
    from fedmatch.audit.proofs import verify_proof_document

    trusted = _trusted(args)
    if not trusted:
        raise ConfigError("--verify needs the party's key: --config, --state-dir or --key")
    result = verify_proof_document(_read(args.verify, "proof file"), trusted)
    print(json.dumps(result))
    print(f"verified: {result['shows']}", file=sys.stderr)
    return EXIT_OK


def _verify_bundle(args: argparse.Namespace) -> int:
    from fedmatch.audit.proofs import bundle_keys, verify_bundle

    bundle = _read(args.bundle, "bundle")
    trusted = _trusted(args)
    if args.trust_bundle_keys:
        print(
            "WARNING: checking the bundle against the keys it carries: this shows only that "
            "it is self-consistent; compare its key ids with the parties' published keys",
            file=sys.stderr,
        )
        trusted = bundle_keys(bundle) | trusted
    if not trusted:
        raise ConfigError(
            "audit verify --bundle needs the parties' keys: --config, --state-dir or --key "
            "(or --trust-bundle-keys)"
        )
    result = verify_bundle(bundle, trusted)
    print(json.dumps(result))
    print(f"verified: {result['shows']}", file=sys.stderr)
    for line in result["timeline"]:
        print(f"  {line}", file=sys.stderr)
    return EXIT_OK
