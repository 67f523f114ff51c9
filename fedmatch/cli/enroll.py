"""``fedmatch enroll``: a state's own authority enrols records at its own node, from
templates, a photo or a folder of photos (bulk), with a CSV manifest or flags. Every record
is checked (dates, minimum age, manifest rows) before anything is sent. Photos go to the
node, which makes the template with its own face model and keeps the facial image that hits
are verified with; records enrolled from templates are not verifiable by image."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedmatch.cli.common import (
    EXIT_INPUT,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_SOME_REJECTED,
    EXIT_UNREACHABLE,
    QUALITY_EXIT,
    header_args,
    insecure_arg,
    load_operator,
    new_header,
    officer_id,
    operator_args,
    parse_pick,
    warn_insecure,
)
from fedmatch.domain import RESETTLEMENT_BASES, Category, Purpose, Sex, parse_date
from fedmatch.errors import FedmatchError, InvalidInput

if TYPE_CHECKING:
    from fedmatch.requester.enrolment import EnrolmentRecord

__all__ = ["EXIT_INTERRUPTED", "add_parsers", "run"]

# Image files of other formats are listed too, so that the node's refusal (naming the
# format: only JPEG, PNG and JPEG 2000 are accepted) is reported, not the file skipped.
_OTHER_IMAGE_SUFFIXES = frozenset({".bmp", ".webp", ".tif", ".tiff", ".gif", ".heic", ".avif"})


def add_parsers(sub: Any) -> None:
    """Register ``enroll`` on the ``fedmatch`` subcommands."""
    enroll = sub.add_parser("enroll", help="enrol records at a node (your own state's node)")
    enroll.set_defaults(run=run)
    enroll.add_argument("--node", required=True, help="node address host:port")
    operator_args(enroll, "each enrolment", required=False)
    insecure_arg(enroll)
    header_args(enroll)
    source = enroll.add_mutually_exclusive_group(required=True)
    source.add_argument("--template", type=Path, help=".npy or .json template(s)")
    source.add_argument("--image", type=Path, help="a photo (one face, or --pick)")
    source.add_argument(
        "--images", type=Path, help="a folder of photos: bulk, reference = file name stem"
    )
    enroll.add_argument("--model-id", default="sface-2021dec-int8bq", help="model of --template")
    enroll.add_argument(
        "--manifest",
        type=Path,
        help="CSV with reference,category,event_date,event_place,capture_date,sex and either "
        "row (indexing the --template matrix) or image (a photo path, relative to the CSV)",
    )
    enroll.add_argument(
        "--pick", help="which face of a photo with several: an index (0 = best) or 'largest'"
    )
    enroll.add_argument("--reference", help="origin reference number (single record)")
    enroll.add_argument("--category", choices=[c.value for c in Category])
    enroll.add_argument("--event-date", help="YYYY-MM-DD")
    enroll.add_argument("--event-place")
    enroll.add_argument("--capture-date", help="YYYY-MM-DD (default: event date)")
    enroll.add_argument("--sex", default="", choices=[s.value for s in Sex])
    enroll.add_argument(
        "--birth-date",
        help="YYYY-MM-DD (required: no one under 6 at capture is enrolled; manifest column "
        "birth_date)",
    )
    enroll.add_argument(
        "--birth-date-estimated",
        action="store_true",
        help="the birth date is an estimate (a child who could be under 6 is refused; "
        "manifest column birth_date_estimated = 1)",
    )
    enroll.add_argument(
        "--resettlement-basis",
        default="",
        choices=sorted(RESETTLEMENT_BASES),
        help="resettlement records only, required for them: the Eurodac recast article the "
        "data were taken under, which decides their retention (Art. 29(3)-(5)); 18(1) is "
        "refused, those data are not recorded (Art. 29(2)); manifest column "
        "resettlement_basis",
    )
    enroll.add_argument("--unit", default="", help="enrolling unit (logged)")
    enroll.add_argument(
        "--skip-existing",
        action="store_true",
        help="a record whose reference the register already holds (ALREADY_EXISTS) is "
        "counted as skipped and the run goes on: how an interrupted bulk run is resumed "
        "(the same command again, with this flag)",
    )


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from fedmatch.cli.templates import read_templates
    from fedmatch.requester.enrolment import NodeEnroller

    insecure = warn_insecure(args, "enrolment")
    matrix = read_templates(args.template) if args.template else np.zeros((0, 1), np.float32)
    records = _records(args, _enrol_rows(args), matrix.shape[0])
    security, signer = load_operator(args.config, insecure, args.state, signs=True)
    assert security is not None and signer is not None
    # Who enrols: the officer of the certificate (a wrong --operator is refused here), whom
    # each record names too.
    args.operator = officer_id(args, signer)
    records = [(replace(r, operator_id=args.operator), source) for r, source in records]
    bulk = _Bulk(args, records, matrix)
    with (
        NodeEnroller(
            args.node,
            args.model_id,
            credentials=security.channel_credentials(),
            member_state=args.state,
            signer=signer,
        ) as node,
        _CtrlC() as ctrl_c,
    ):
        try:
            code = bulk.run(node, ctrl_c)
        except KeyboardInterrupt:
            # A second Ctrl-C: the record being sent is abandoned, its outcome unknown (a
            # re-run with --skip-existing finds out).
            bulk.abandoned = True
            code = EXIT_INTERRUPTED
    bulk.report(code)
    return code


# The exit code of an enrolment stopped by Ctrl-C (SIGINT), after its summary: 128 + 2, as
# shells report a command killed by SIGINT.
EXIT_INTERRUPTED = 130


class _CtrlC:
    """SIGINT during a bulk enrolment: the first asks the loop to stop after the record
    being sent (its answer is awaited and counted); a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _CtrlC:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *_: object) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: object) -> None:
        import signal

        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nfedmatch: Ctrl-C: stopping after the record being sent (again to abandon it)",
            file=sys.stderr,
            flush=True,
        )
        signal.signal(signal.SIGINT, signal.default_int_handler)


class _Bulk:
    """One enrolment run over its records, with exact counts for the progress line and the
    summary: enrolled, skipped (already in the register, with --skip-existing), rejected by
    a quality gate (per reason), and not attempted."""

    def __init__(self, args: argparse.Namespace, records: list[Any], matrix: Any) -> None:
        self.args = args
        self.records = records
        self.matrix = matrix
        self.pick = parse_pick(args.pick)
        self.purpose = Purpose.parse(args.purpose)
        self.enrolled = 0
        self.skipped: list[str] = []
        self.rejects: list[dict[str, str]] = []
        self.last_enrolled = ""
        self.register_size = 0
        self.stopped_at = ""
        self.interrupted = False
        self.abandoned = False
        self.current = ""

    @property
    def attempted(self) -> int:
        return self.enrolled + len(self.skipped) + len(self.rejects)

    def run(self, node: Any, ctrl_c: _CtrlC) -> int:
        import grpc

        for record, source in self.records:
            if ctrl_c.requested:
                self.interrupted = True
                return EXIT_INTERRUPTED
            self.current = record.reference
            try:
                self.register_size = self._send(node, record, source)
            except grpc.RpcError as err:
                code = err.code()
                reason = _quality_reason(err)
                if reason and len(self.records) > 1:
                    self.rejects.append({"file": Path(str(source)).name, "reason": reason})
                elif code == grpc.StatusCode.ALREADY_EXISTS and self.args.skip_existing:
                    self.skipped.append(record.reference)
                else:
                    self.stopped_at = record.reference
                    hint = (
                        " (already enrolled: --skip-existing counts such records as skipped "
                        "and goes on)"
                        if code == grpc.StatusCode.ALREADY_EXISTS
                        else ""
                    )
                    print(
                        f"fedmatch: record {record.reference}: {code.name}: {err.details()}"
                        f"{hint} ({self.enrolled} of {len(self.records)} enrolled before it)",
                        file=sys.stderr,
                    )
                    if reason:
                        return QUALITY_EXIT.get(reason, EXIT_INPUT)
                    if code == grpc.StatusCode.UNAVAILABLE:
                        return EXIT_UNREACHABLE
                    return EXIT_REFUSED
            else:
                self.enrolled += 1
                self.last_enrolled = record.reference
            self.current = ""
            self._progress()
        if ctrl_c.requested:
            # Ctrl-C while the last record was being sent: everything was done anyway.
            self.interrupted = True
            return EXIT_INTERRUPTED
        return EXIT_SOME_REJECTED if self.rejects else EXIT_OK

    def _send(self, node: Any, record: EnrolmentRecord, source: int | Path) -> int:
        args = self.args
        header = new_header(
            args.state, self.purpose, args.legal_basis, args.case_reference, args.unit,
            args.operator,
        )  # fmt: skip
        if isinstance(source, Path):
            # The photo goes to the node: it makes the template with its own model and
            # keeps the facial image a hit is verified with.
            return int(
                node.enroll_photo(header, record, _photo_bytes(source), source.name, self.pick)
            )
        return int(node.enroll(header, record, self.matrix[source]))

    def _progress(self) -> None:
        total = len(self.records)
        if total > 1:
            done = self.attempted
            print(
                f"\r[{done}/{total}] enrolled {self.enrolled}, rejected {len(self.rejects)}, "
                f"skipped {len(self.skipped)}",
                end="" if done < total else "\n",
                file=sys.stderr,
                flush=True,
            )

    def report(self, code: int) -> None:
        """The summary (JSON, stdout's last line) of a run that ended, stopped or not."""
        reasons: dict[str, int] = {}
        for r in self.rejects:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        unknown = 1 if self.abandoned else 0
        stopped = 1 if self.stopped_at else 0
        not_attempted = len(self.records) - self.attempted - unknown - stopped
        summary: dict[str, Any] = {
            "enrolled": self.enrolled,
            "skipped": len(self.skipped),
            "rejected": len(self.rejects),
            "reject_reasons": reasons,
            "rejected_files": self.rejects,
            "not_attempted": not_attempted,
            "total": len(self.records),
            "last_enrolled": self.last_enrolled or None,
            "register_size": self.register_size,
        }
        if self.stopped_at:
            summary["stopped_at"] = self.stopped_at
        if code == EXIT_INTERRUPTED:
            summary["interrupted"] = True
            # Sent, answer not awaited (a second Ctrl-C): enrolled or not, nobody knows here.
            summary["abandoned"] = self.current if self.abandoned else None
            if self.records and self.attempted < len(self.records):
                print(
                    f"\nfedmatch: interrupted: {self.enrolled} enrolled, "
                    f"{len(self.skipped)} skipped, {len(self.rejects)} rejected, "
                    f"{not_attempted} not attempted"
                    + (f", {self.current} abandoned" if self.abandoned else "")
                    + f" (last enrolled: {self.last_enrolled or 'none'}); run the same "
                    "command again with --skip-existing to resume",
                    file=sys.stderr,
                )
        print(json.dumps(summary))


def _photo_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"photo {path.name} could not be read ({exc.strerror})") from None


def _quality_reason(err: Any) -> str:
    """The quality gate that refused a photo at the node ("" for any other refusal)."""
    import grpc

    if err.code() != grpc.StatusCode.INVALID_ARGUMENT:
        return ""
    reason = str(err.details() or "").partition(":")[0]
    return reason if reason in QUALITY_EXIT else ""


def _flag_row(args: argparse.Namespace, **extra: str) -> dict[str, Any]:
    needed = ("category", "event_date", "event_place")
    missing = [n for n in needed if not getattr(args, n)]
    if missing:
        flags = ", ".join("--" + m.replace("_", "-") for m in missing)
        raise InvalidInput(f"enrolment without a manifest needs {flags}")
    return {
        "category": args.category, "event_date": args.event_date,
        "event_place": args.event_place, "capture_date": args.capture_date,
        "sex": args.sex, "birth_date": args.birth_date,
        "birth_date_estimated": "1" if args.birth_date_estimated else "",
        "resettlement_basis": args.resettlement_basis, **extra,
    }  # fmt: skip


def _enrol_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The records to enrol as manifest-like rows with a ``row`` or an ``image`` source."""
    if args.manifest:
        with args.manifest.open(newline="") as fh:
            rows: list[dict[str, Any]] = list(csv.DictReader(fh))
        base = args.images or args.manifest.parent
        for row in rows:
            if row.get("image"):
                row["image"] = str(base / row["image"])
        return rows
    if args.template:
        if not args.reference:
            raise InvalidInput("single-record enrolment needs --reference")
        return [_flag_row(args, reference=args.reference, row="0")]
    if args.image:
        reference = args.reference or args.image.stem
        return [_flag_row(args, reference=reference, image=str(args.image))]
    from fedmatch.biometrics.photofile import SUFFIXES

    listed = SUFFIXES | _OTHER_IMAGE_SUFFIXES
    photos = sorted(p for p in args.images.iterdir() if p.suffix.lower() in listed)
    if not photos:
        raise InvalidInput(f"no photos in {args.images.name}")
    return [_flag_row(args, reference=p.stem, image=str(p)) for p in photos]


def _records(
    args: argparse.Namespace, rows: list[dict[str, Any]], templates: int
) -> list[tuple[EnrolmentRecord, int | Path]]:
    """Every record with its template row or photo, all validated before anything is sent."""
    from fedmatch.requester.enrolment import EnrolmentRecord
    from node.retention import check_resettlement_basis

    out: list[tuple[EnrolmentRecord, int | Path]] = []
    for n, row in enumerate(rows, 1):
        try:
            source: int | Path
            if row.get("image"):
                source = Path(row["image"])
            else:
                source = int(row["row"])
                if not 0 <= source < templates:
                    raise IndexError(source)
            event = parse_date(row["event_date"], "event_date")
            captured = row.get("capture_date")
            category = Category.parse(row["category"])
            basis = (row.get("resettlement_basis") or "").strip()
            # Refused here, before anything is sent, as the node would refuse it.
            check_resettlement_basis(category, basis)
            record = EnrolmentRecord(
                reference=row["reference"],
                category=category,
                event_date=event,
                event_place=row["event_place"],
                capture_date=parse_date(captured, "capture_date") if captured else event,
                sex=Sex.parse(row.get("sex") or ""),
                operator_id=args.operator or "",
                resettlement_basis=basis,
                **_birth(row),
            )
        except (KeyError, ValueError, IndexError, TypeError):
            raise InvalidInput(
                f"manifest row {n} is incomplete or names a missing template row"
            ) from None
        except FedmatchError as exc:
            raise InvalidInput(f"manifest row {n}: {exc}") from None
        out.append((record, source))
    return out


def _birth(row: dict[str, Any]) -> dict[str, Any]:
    """A row's birth date, checked against the minimum age before anything is sent."""
    from node.retention import check_enrolment_age

    raw = row.get("birth_date")
    born = parse_date(raw, "birth_date") if raw else None
    estimated = (row.get("birth_date_estimated") or "").strip().lower() in ("1", "true", "yes")
    captured = row.get("capture_date") or row["event_date"]
    check_enrolment_age(born, estimated, parse_date(captured, "capture_date"))
    return {"birth_date": born, "birth_date_estimated": estimated}
