"""The ``fedmatch`` command: the parser and the dispatch.

Subcommands: ``node serve|seed|status|...``, ``coordinator serve|status``, ``keys
generate``, ``enroll``, ``lookup``, ``confirm-decision``, ``verify-hit``, ``resolve``,
``dublin-form``, ``desk protect-key|serve``, ``rights which-states|answer``, ``demo``,
``evaluate``, ``audit``, ``bench``, ``pki``, ``health``, ``config check``; ``--version``.
Every subcommand has ``--help``. Each command group lives in its own module of
:mod:`fedmatch.cli`, which adds its parsers and names the function that runs it; this is
the only place that turns errors into exit codes (:mod:`fedmatch.cli.common`): 0 success,
2 usage or input error, 3 refused by a peer, 4 unreachable peer, 1 anything else (the
README's "Exit codes" lists every code, the commands' own included).

Every channel is mutual TLS with the certificates a party's TOML file names in ``[tls]``;
``lookup`` and ``enroll`` read an operator workstation's file (``--config``: ``[tls]``, the
workstation's channel, and for the commands that sign ``[officer]``, the officer's personal
certificate and protected key, which signs every lookup and resolve). ``--dev-insecure`` (on the
commands that connect or serve) is plaintext gRPC for development, warned about on stderr
at every start; signed requests are still verified against the ``[tls]`` root and CRLs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from fedmatch import __version__
from fedmatch.cli import (
    audit,
    bench,
    case,
    config_check,
    coordinator,
    demo,
    desk,
    enroll,
    evaluate,
    forms,
    health,
    keys,
    lookup,
    node,
    pki,
    rights,
    verify,
)
from fedmatch.cli.common import (
    EXIT_ERROR,
    EXIT_INPUT,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    setup_logging,
)
from fedmatch.errors import ConfigError, FedmatchError

__all__ = ["build_parser", "main"]

# The command groups in the order `fedmatch --help` lists them.
_GROUPS = (node, coordinator, keys, enroll, lookup, case, verify, forms, desk, rights, demo,
           evaluate, audit, bench, pki, health, config_check)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedmatch", description="Federated, encrypted biometric matching for member states."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--version", action="version", version=f"fedmatch {__version__}")
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log lines as text (default) or one JSON object per line (also "
        "FEDMATCH_LOGGING_FORMAT or [logging] format in a party's TOML file)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in _GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        setup_logging(args, None)
        # Every command's parser names the function that runs it.
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except ConfigError as exc:
        print(f"fedmatch: configuration error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except FedmatchError as exc:
        print(f"fedmatch: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        return EXIT_ERROR
    except Exception as exc:
        import grpc

        if isinstance(exc, grpc.RpcError):
            code = exc.code()
            print(f"fedmatch: {code.name}: {exc.details()}", file=sys.stderr)
            return EXIT_UNREACHABLE if code == grpc.StatusCode.UNAVAILABLE else EXIT_REFUSED
        raise
