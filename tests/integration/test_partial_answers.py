"""Issue 19, items 4 and 5, with the `fedmatch` command against a real federation: a lookup
or a resolve with a node down says which state did not answer, exits with its own code and
proposes nothing unless the operator accepts the incomplete federation (logged); a probe
matching more candidates than a request may carry is refused with the true reason at each
step (packets, verify-hit, resolve), never as a "malformed" file."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from fedmatch.cli.common import EXIT_INCOMPLETE, EXIT_INPUT
from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.domain import Category
from fedmatch.protocol.limits import MAX_HANDLES_PER_REQUEST
from tests.federation import DIM, enrol, federation
from tests.integration.test_cli_e2e import WHO, _fedmatch, operator, sign_verdicts

HEADER = ["--state", "DE", "--legal-basis", "Reg. (EU) 2024/1351 Art. 39",
          "--case-reference", "DE-2026-19"]  # fmt: skip


def _last_json(out: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(out.splitlines()[-1])
    return result


# Seven `fedmatch` processes, ~30 s on the 2-core machine.
@pytest.mark.slow
def test_partial_answer_is_loud(tmp_path: Path) -> None:
    rng = np.random.default_rng(19)
    person = unit_vectors(rng, 1, DIM)[0]
    np.save(tmp_path / "probe.npy", capture(person, rng, 0.9))
    np.save(tmp_path / "stranger.npy", unit_vectors(rng, 1, DIM)[0])
    fed_dir = tmp_path / "fed"
    with federation(fed_dir, ("DE", "IT", "FR"), records=20, node_deadline=5.0) as fed:
        enrol(fed.nodes["IT"], capture(person, rng, 0.9), "IT-19", Category.IRREGULAR_CROSSING,
              dt.date(2026, 4, 2), "Bari")  # fmt: skip
        fed.servers["FR"].stop(0)
        address = fed.coordinator_server.address
        lookup = ["lookup", *operator(fed_dir, "DE"), "--coordinator", address, *HEADER, *WHO,
                  "--application-date", "2026-11-21"]  # fmt: skip

        # No hit among the states that answered: no proposal on an incomplete federation.
        alone = _fedmatch(*lookup, "--template", str(tmp_path / "stranger.npy"))
        assert alone.returncode == EXIT_INCOMPLETE, alone.stderr
        assert "FR did not answer" in alone.stderr and "--accept-incomplete" in alone.stderr
        summary = _last_json(alone.stdout)
        assert summary["decision"] is None and summary["unanswered"] == ["FR"]
        accepted = _fedmatch(
            *lookup, "--template", str(tmp_path / "stranger.npy"), "--accept-incomplete"
        )
        assert accepted.returncode == EXIT_INCOMPLETE, accepted.stderr
        decision = _last_json(accepted.stdout)["decision"]
        assert isinstance(decision, dict) and decision["complete"] is False
        assert "FR did not answer" in decision["explanation"]
        assert "provisional" in decision["explanation"]
        assert "accepted as incomplete" in accepted.stderr  # the requester's log says so

        # With a hit at IT: the candidates say FR did not answer, resolve refuses without
        # --accept-incomplete, and proposes a provisional decision with it.
        candidates = tmp_path / "candidates.json"
        pending = _fedmatch(
            *lookup, "--template", str(tmp_path / "probe.npy"), "--candidates-out", str(candidates)
        )
        assert pending.returncode == EXIT_INCOMPLETE, pending.stderr
        assert "FR did not answer" in pending.stderr
        verdicts = sign_verdicts(fed_dir, candidates, ("anna", "ben"))
        resolve = ["resolve", *operator(fed_dir, "DE"), "--coordinator", address,
                   "--candidates", str(candidates), "--verdicts", *verdicts,
                   "--application-date", "2026-11-21"]  # fmt: skip
        refused = _fedmatch(*resolve)
        assert refused.returncode == EXIT_INCOMPLETE, refused.stderr
        assert "FR did not answer" in refused.stderr and "--accept-incomplete" in refused.stderr
        assert refused.stdout == ""
        provisional = _fedmatch(*resolve, "--accept-incomplete")
        assert provisional.returncode == EXIT_INCOMPLETE, provisional.stderr
        assert "accepted as incomplete" in provisional.stderr
        answer = _last_json(provisional.stdout)
        decision = answer["decision"]
        assert isinstance(decision, dict)
        assert decision["responsible_state"] == "IT" and decision["complete"] is False
        assert decision["unanswered"] == ["FR"]
        assert "FR did not answer" in decision["explanation"]
        assert "provisional" in decision["explanation"]


# Three `fedmatch` processes, four nodes and 75 enrolments, ~25 s on the 2-core machine.
@pytest.mark.slow
def test_447_candidates_refused_with_the_true_reason(tmp_path: Path) -> None:
    """Named after the 447-hit file of issue 19. A node's result block with more than 32
    positives is dropped as implausible (fedmatch/he/keypair.py, a bound against a node
    making up candidates), so the near-identical records are spread over three states:
    25 each, 75 in all, past the per-request limit of 64."""
    rng = np.random.default_rng(447)
    person = unit_vectors(rng, 1, DIM)[0]
    np.save(tmp_path / "probe.npy", capture(person, rng, 0.95))
    owners = ("IT", "FR", "AT")
    many = 25 * len(owners)
    assert many > MAX_HANDLES_PER_REQUEST
    fed_dir = tmp_path / "fed"
    with federation(fed_dir, ("DE", *owners), records=10) as fed:
        for state in owners:
            for i in range(many // len(owners)):
                enrol(fed.nodes[state], capture(person, rng, 0.95), f"{state}-TWIN-{i}",
                      Category.APPLICANT, dt.date(2026, 4, 2), "Bari")  # fmt: skip
        address = fed.coordinator_server.address
        candidates = tmp_path / "candidates.json"
        found = _fedmatch(
            "lookup", *operator(fed_dir, "DE"), "--coordinator", address, *HEADER, *WHO,
            "--application-date", "2026-11-21", "--template", str(tmp_path / "probe.npy"),
            "--candidates-out", str(candidates),
        )  # fmt: skip
        # The candidates are written; their packets are not asked for (one request per
        # query carries at most 64 handles, a privacy bound), and the reason is given.
        assert found.returncode == EXIT_INPUT, found.stderr
        reason = f"{many} candidates; at most {MAX_HANDLES_PER_REQUEST} per packet request"
        assert reason in found.stderr, found.stderr
        summary = _last_json(found.stdout)
        assert summary["hits"] == many
        packets = summary["packets"]
        assert isinstance(packets, dict) and reason in str(packets["refused"])

        # The verifiers have no images to compare, and are told why (not "malformed").
        listed = _fedmatch("verify-hit", "--candidates", str(candidates))
        assert listed.returncode == EXIT_INPUT, listed.stderr
        assert f"no verification packets to compare: {reason}" in listed.stderr
        assert "malformed" not in listed.stderr

        # A resolve judges all the candidates together: not split, refused with the reason.
        resolve = _fedmatch(
            "resolve", *operator(fed_dir, "DE"), "--coordinator", address,
            "--candidates", str(candidates), "--verdicts", str(tmp_path / "none.json"),
            "--application-date", "2026-11-21",
        )  # fmt: skip
        assert resolve.returncode == EXIT_INPUT, resolve.stderr
        assert f"{many} candidates; at most {MAX_HANDLES_PER_REQUEST} per resolve" in (
            resolve.stderr
        ), resolve.stderr
        assert "malformed" not in resolve.stderr
