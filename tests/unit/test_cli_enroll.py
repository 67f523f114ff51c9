"""``fedmatch enroll`` and resettlement records: the article the data were taken under is
given with ``--resettlement-basis`` (or the manifest column ``resettlement_basis``), checked
before anything is sent (Eurodac recast Art. 29(2)-(5)), and carried on the wire."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from fedmatch.cli import enroll
from fedmatch.errors import InvalidInput


def parse(tmp_path: Path, *extra: str) -> argparse.Namespace:
    template = tmp_path / "t.npy"
    np.save(template, np.full(8, 8**-0.5, dtype=np.float32))
    parser = argparse.ArgumentParser()
    enroll.add_parsers(parser.add_subparsers())
    return parser.parse_args([
        "enroll", "--dev-insecure", "--node", "127.0.0.1:9", "--state", "IT",
        "--legal-basis", "x", "--case-reference", "y", "--template", str(template),
        "--reference", "IT-R-1", "--category", "resettlement", "--event-date", "2026-07-01",
        "--event-place", "Roma", "--birth-date", "1990-05-17", *extra,
    ])  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        # Art. 29(2): data taken under Art. 18(1) are not recorded.
        pytest.param(("--resettlement-basis", "18(1)"), r"not recorded: Art\. 29\(2\)",
                     id="art-18(1)"),
        # Art. 29(3)-(5): the period depends on the basis.
        pytest.param((), "resettlement_basis is required", id="none"),
    ],
)  # fmt: skip
def test_enroll_refuses_resettlement_without_a_recorded_basis_before_sending(
    tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    args = parse(tmp_path, *extra)
    # Nothing listens at 127.0.0.1:9: the refusal comes before any connection.
    with pytest.raises(InvalidInput, match=message):
        enroll.run(args)


def test_enroll_carries_the_basis_on_the_wire(tmp_path: Path) -> None:
    args = parse(tmp_path, "--resettlement-basis", "18(2)(b)")
    ((record, source),) = enroll._records(args, enroll._enrol_rows(args), 1)
    assert source == 0 and record.resettlement_basis == "18(2)(b)"
    assert record.to_pb().resettlement_basis == "18(2)(b)"


def test_a_basis_on_another_category_is_refused(tmp_path: Path) -> None:
    args = parse(tmp_path, "--resettlement-basis", "20")
    args.category = "applicant"
    with pytest.raises(InvalidInput, match="only for resettlement"):
        enroll._records(args, enroll._enrol_rows(args), 1)
