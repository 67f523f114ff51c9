"""What every ``fedmatch`` command group shares: exit codes, the common arguments (request
header, operator file, ``--dev-insecure``, ``--log-format``), logging set-up, the operator
workstation's file and the checks of a party's own certificate.

Imported by the command modules of :mod:`fedmatch.cli`; it imports none of them.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fedmatch.domain import Purpose, QueryHeader
from fedmatch.errors import ConfigError, FedmatchError, InvalidInput, PermissionDenied

if TYPE_CHECKING:
    from fedmatch.audit.note import NoteSigner
    from fedmatch.biometrics.pipeline import FacePipeline
    from fedmatch.he.keypair import RequesterKeys
    from fedmatch.protocol.statement import RequestSigner
    from fedmatch.protocol.transport import Security
    from fedmatch.requester import Requester

__all__ = [
    "EXIT_AUDIT_FAILED",
    "EXIT_ERROR",
    "EXIT_INCOMPLETE",
    "EXIT_INPUT",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_SOME_REJECTED",
    "EXIT_UNREACHABLE",
    "INSECURE_WARNING",
    "QUALITY_EXIT",
    "check_own_certificate",
    "face_pipeline",
    "header_args",
    "insecure_arg",
    "load_operator",
    "log_format_arg",
    "new_header",
    "officer_id",
    "operator_args",
    "operator_config_arg",
    "parse_pick",
    "requester_from_args",
    "serve_args",
    "setup_logging",
    "signed_requester",
    "warn_insecure",
]

# The exit codes of the command; only `fedmatch.cli.main` turns errors into them.
EXIT_OK, EXIT_ERROR, EXIT_INPUT, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
EXIT_SOME_REJECTED = 5
# `audit verify` found a problem: the report names the party and the evidence.
EXIT_AUDIT_FAILED = 6
# (7 is `node status` / `coordinator status`: unhealthy, fedmatch.ops.status.)
# A lookup or resolve that some member state's node did not answer: the output names the
# states, and any decision in it is provisional (`--accept-incomplete`).
EXIT_INCOMPLETE = 8
# Exit codes of the face quality gates: one per reason, so that scripts can tell them apart.
QUALITY_EXIT = {
    "unreadable_image": 10,
    "no_face": 11,
    "several_faces": 12,
    "face_too_small": 13,
    "too_blurred": 14,
    "too_dark": 15,
}


def header_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", required=True, help="requesting member state (ISO 3166-1 alpha-2)")
    p.add_argument(
        "--purpose",
        default=Purpose.ASYLUM_DUBLIN.value,
        choices=[x.value for x in Purpose],
        help="purpose of the request (a law_enforcement lookup needs a verifying authority's "
        "approval of each request: library only, see deploy/README.md)",
    )
    p.add_argument(
        "--legal-basis", required=True, help="legal basis, e.g. 'Reg. 2024/1358 Art. 15'"
    )
    p.add_argument("--case-reference", required=True, help="case or file number")


INSECURE_WARNING = (
    "WARNING: --dev-insecure: PLAINTEXT gRPC, no TLS and no client certificates on this "
    "{what}. Signed requests are still verified against the PKI. For development on one "
    "machine only, never in production."
)


def insecure_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dev-insecure",
        action="store_true",
        help="development only: plaintext gRPC, no TLS (warned about at every start); "
        "the [tls] root and CRLs still verify signed requests",
    )


def warn_insecure(args: argparse.Namespace, what: str) -> bool:
    """Print the --dev-insecure warning (every start) and say whether it is on."""
    if getattr(args, "dev_insecure", False):
        print(INSECURE_WARNING.format(what=what), file=sys.stderr, flush=True)
        return True
    return False


def operator_config_arg(p: argparse.ArgumentParser, required: bool, needs: str) -> None:
    p.add_argument(
        "--config",
        type=Path,
        required=required,
        help="operator workstation TOML: [tls] key, chain, root, crls (the workstation's "
        f"certificate of `fedmatch pki issue --role operator`: the channel){needs}",
    )


# What the signing commands say of --config and --operator.
OFFICER_CONFIG_HELP = (
    ", and [officer] chain, key and key_passphrase_env or key_passphrase_file (the "
    "personal certificate of `fedmatch pki issue --role officer --instance ID` and its "
    "protected key, which signs {what})"
)


def operator_args(p: argparse.ArgumentParser, what: str, required: bool = True) -> None:
    """``--config`` (with ``[officer]``) and ``--operator`` of a command whose requests
    the officer signs (``required=False``: the command checks its other input first, and
    :func:`load_operator` refuses a missing ``--config``)."""
    operator_config_arg(p, required, OFFICER_CONFIG_HELP.format(what=what))
    p.add_argument(
        "--operator",
        help="the officer's id (optional): must be the instance of the [officer] "
        "certificate, which is what every party logs",
    )


def log_format_arg(p: argparse.ArgumentParser) -> None:
    # Also accepted after `serve`; SUPPRESS keeps an absent flag from hiding the global one.
    p.add_argument(
        "--log-format", choices=["text", "json"], default=argparse.SUPPRESS,
        help="log lines as text (default) or one JSON object per line",
    )  # fmt: skip


def serve_args(p: argparse.ArgumentParser, role: str, listen_help: str) -> None:
    """The options of ``node serve`` and ``coordinator serve``."""
    p.add_argument("--config", type=Path, required=True, help=f"{role} TOML config")
    p.add_argument("--listen", help=listen_help)
    p.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    insecure_arg(p)
    log_format_arg(p)


def setup_logging(args: argparse.Namespace, config: Path | None) -> None:
    """Log format and level: --log-format, else FEDMATCH_LOGGING_*, else [logging] of
    ``config`` (a serving party's TOML file, applied once it is known)."""
    from fedmatch.ops.logjson import configure_logging, load_logging_config

    serving = args.command in ("node", "coordinator") and "status" not in (
        getattr(args, "node_command", None),
        getattr(args, "coord_command", None),
    )
    serving = serving or getattr(args, "desk_command", None) == "serve"
    default = logging.INFO if args.verbose or serving else logging.WARNING
    configure_logging(load_logging_config(config, args.log_format), default)


def parse_pick(value: str | None) -> int | Literal["largest"] | None:
    if value is None:
        return None
    if value == "largest":
        return "largest"
    try:
        return int(value)
    except ValueError:
        raise InvalidInput("--pick takes a face index (0 = best) or 'largest'") from None


def face_pipeline(args: argparse.Namespace) -> FacePipeline:
    from fedmatch.biometrics.pipeline import FacePipeline

    return FacePipeline.for_model(getattr(args, "model", None))


def new_header(
    state: str, purpose: Purpose, legal_basis: str, case: str, unit: str, operator: str
) -> QueryHeader:
    return QueryHeader(secrets.token_hex(16), state, purpose, legal_basis, case, unit, operator)


def load_operator(
    path: Path | None, insecure: bool, state: str, signs: bool
) -> tuple[Security | None, RequestSigner | None]:
    """An operator workstation's TOML file: ``[tls]`` (the workstation's mTLS certificate,
    an operator certificate of ``state``: the channel only) and, when the command ``signs``
    requests, ``[officer]`` (the personal certificate and passphrase-protected key of the
    officer at the workstation, whose key signs: :mod:`fedmatch.requester.officer`).
    Relative paths are relative to the file. Checked here, before anything is sent: a
    wrong certificate would be refused remotely."""
    from fedmatch.config import read_toml
    from fedmatch.protocol.transport import load_security
    from fedmatch.requester.officer import check_operator_table, load_officer

    if path is None:
        if signs:
            # --dev-insecure makes the channel plaintext; it never waives the signature.
            raise InvalidInput(
                "--config (the operator's [tls] table and the [officer] who signs) is required"
            )
        if not insecure:
            raise InvalidInput("--config (the operator's [tls] table) is required")
        return None, None
    security = load_security(path, insecure)
    doc = read_toml(path)
    check_operator_table(doc)
    check_own_certificate(security, "operator", state, None)
    signer = None
    if signs:
        try:
            signer = load_officer(path, doc.get("officer"), security.verify_chain, state)
        except PermissionDenied as exc:
            raise ConfigError(f"[officer] of {path.name}: {exc}") from None
    return security, signer


def officer_id(args: argparse.Namespace, signer: RequestSigner) -> str:
    """Who asks: the officer of the ``[officer]`` certificate. ``--operator``, if given,
    must name that very officer (the coordinator and the nodes would refuse anyone else)."""
    given = getattr(args, "operator", None)
    if given and given != signer.officer:
        raise InvalidInput(
            f"--operator {given!r} is not the officer whose certificate signs ({signer.officer!r} "
            "in [officer] chain): leave --operator out, the certificate names who asks"
        )
    return signer.officer


def signed_requester(
    args: argparse.Namespace,
    state: str,
    keys: RequesterKeys | None,
    unit: str,
    security: Security,
    signer: RequestSigner,
) -> Requester:
    """A client of the coordinator at ``--coordinator`` whose every request the officer's
    key signs (their id, checked against ``--operator``, is the operator of every request),
    over the workstation's mTLS channel."""
    from fedmatch.requester import Requester

    return Requester(
        args.coordinator, state, keys, unit, officer_id(args, signer), signer,
        security.channel_credentials(),
    )  # fmt: skip


def requester_from_args(args: argparse.Namespace, state: str, unit: str) -> Requester:
    """The insecure warning, the operator file (``--config``, with its ``[officer]``) and
    the key file (``--keys``, if the command has one), then :func:`signed_requester`."""
    from fedmatch.requester.keyfile import load_keys

    insecure = warn_insecure(args, args.command)
    security, signer = load_operator(args.config, insecure, state, signs=True)
    assert security is not None and signer is not None
    keys = load_keys(args.keys) if getattr(args, "keys", None) else None
    return signed_requester(args, state, keys, unit, security, signer)


def _leaf_identity(security: Security) -> Any:
    """The identity this party's own certificate names (checked against the federation
    root and CRLs, as its peers will check it)."""
    try:
        chain = security.chain_pem()
    except OSError as exc:
        raise ConfigError(
            f"tls.chain {security.files.chain} could not be read ({exc.strerror})"
        ) from None
    try:
        return security.verify_chain(chain)
    except FedmatchError as exc:
        raise ConfigError(f"tls.chain {security.files.chain}: {exc}") from None


def check_own_certificate(
    security: Security, role: str, state: str | None, signer: NoteSigner | None
) -> Any:
    """Refuse at start a certificate this party's peers would refuse at every call: another
    role, another member state, expired or revoked, or binding another signing key than the
    one this party signs with (its audit log's, or an operator's request key)."""
    identity = _leaf_identity(security)
    if identity.role != role or identity.member_state != state:
        raise ConfigError(
            f"tls.chain names {identity.dns}, not the {role} of {state or 'the federation'}"
        )
    if signer is not None and identity.signing_key != signer.public_key_bytes():
        raise ConfigError(
            f"tls.chain {security.files.chain} binds another signing key than {signer.name}'s "
            "(issue the certificate with `fedmatch pki issue --signing-key` of that key)"
        )
    return identity
