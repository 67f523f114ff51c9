"""The Dublin case by hand with the `fedmatch` command, as an authority runs it: lookup, two
verifiers' signed verdicts, resolve with a case file (the proposal and its due dates are
printed), and an official's confirm-decision over mutual TLS (the coordinator runs in this
process with its wall clock fixed at 2026-11-21; every command is a real process)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.domain import Category
from tests.federation import DIM, enrol, federation
from tests.integration.test_cli_e2e import WHO, _fedmatch, operator, sign_verdicts

NOW = dt.datetime(2026, 11, 21, 9, 30, tzinfo=dt.UTC)
HEADER = ["--legal-basis", "Reg. (EU) 2024/1351 Art. 39", "--case-reference", "DE-2026-77"]


# Seven `fedmatch` processes, ~30 s on the 2-core machine.
@pytest.mark.slow
def test_lookup_verify_resolve_with_a_case_file_and_confirm(tmp_path: Path) -> None:
    rng = np.random.default_rng(41)
    person = unit_vectors(rng, 1, DIM)[0]
    np.save(tmp_path / "probe.npy", capture(person, rng, 0.9))
    case_file = tmp_path / "case.json"
    case_file.write_text(
        json.dumps(
            {
                "lodging_date": "2026-11-23",
                "documents": [
                    {
                        "issuing_state": "AT",
                        "kind": "short_stay_visa",
                        "valid_from": "2026-03-01",
                        "valid_until": "2026-03-31",
                    }
                ],
            }
        )
    )
    fed_dir = tmp_path / "fed"
    with federation(fed_dir, ("DE", "IT", "FR"), records=20, now=lambda: NOW) as fed:
        enrol(fed.nodes["IT"], capture(person, rng, 0.9), "IT-CLI-9", Category.IRREGULAR_CROSSING,
              dt.date(2026, 4, 2), "Bari")  # fmt: skip
        address = fed.coordinator_server.address
        candidates = tmp_path / "candidates.json"
        pending = _fedmatch(
            "lookup", *operator(fed_dir, "DE"), "--coordinator", address, "--state", "DE",
            *HEADER, *WHO, "--template", str(tmp_path / "probe.npy"),
            "--application-date", "2026-11-21", "--candidates-out", str(candidates),
        )  # fmt: skip
        assert pending.returncode == 0, pending.stderr
        verdicts = sign_verdicts(fed_dir, candidates, ("anna", "ben"))
        resolved = _fedmatch(
            "resolve", *operator(fed_dir, "DE"), "--coordinator", address,
            "--candidates", str(candidates), "--verdicts", *verdicts,
            "--application-date", "2026-11-21", "--case-file", str(case_file),
        )  # fmt: skip
        assert resolved.returncode == 0, resolved.stderr
        answer = json.loads(resolved.stdout.splitlines()[-1])
        proposal = answer["proposal"]
        # The AT visa expired almost 8 months before the registration: past Dublin III's 6
        # months, inside the AMMR's 18 (Art. 29(4)); it outranks the irregular entry into IT.
        assert (proposal["criterion"], proposal["responsible_state"], proposal["procedure"]) == (
            "documents", "AT", "take_charge",
        )  # fmt: skip
        assert proposal["basis"].endswith("Art. 29(4)")
        assert [(d["name"], d["due"]) for d in proposal["deadlines"]] == [
            ("take_charge_request_after_application", "2027-01-21")
        ]
        assert answer["decision"]["responsible_state"] == "IT"  # the hit-only rule

        confirm = [
            "confirm-decision", *operator(fed_dir, "DE"), "--coordinator", address,
            "--state", "DE", *HEADER, "--unit", "dublin-unit-1",
            "--query-id", answer["query_id"], "--proposal", proposal["digest"],
        ]  # fmt: skip
        no_reason = _fedmatch(*confirm, "--override-state", "IT")
        assert no_reason.returncode == 2 and "needs" in no_reason.stderr, no_reason.stderr
        done = _fedmatch(*confirm, "--accept")
        assert done.returncode == 0, done.stderr
        confirmation = json.loads(done.stdout.splitlines()[-1])
        assert confirmation["responsible_state"] == "AT"
        assert confirmation["criterion"] == "documents"
        # The official is the officer whose personal certificate signed the confirmation.
        assert confirmation["official_id"] == "officer-1"
        assert confirmation["confirmed_at"] == NOW.isoformat()
        again = _fedmatch(*confirm, "--accept")
        assert again.returncode == 3 and "ALREADY_EXISTS" in again.stderr, again.stderr

        # A lookup without hits resolves at once: `lookup --case-file` prints the proposal.
        np.save(tmp_path / "stranger.npy", unit_vectors(rng, 1, DIM)[0])
        stranger = _fedmatch(
            "lookup", *operator(fed_dir, "DE"), "--coordinator", address, "--state", "DE",
            *HEADER, *WHO, "--template", str(tmp_path / "stranger.npy"),
            "--application-date", "2026-11-21", "--case-file", str(case_file),
        )  # fmt: skip
        assert stranger.returncode == 0, stranger.stderr
        alone = json.loads(stranger.stdout.splitlines()[-1])
        assert alone["hits"] == 0
        assert (alone["proposal"]["criterion"], alone["proposal"]["responsible_state"]) == (
            "documents", "AT",
        )  # fmt: skip
        assert alone["proposal"]["deadlines"][0]["due"] == "2027-01-21"


# Four server processes, key registration and six lookups: ~40 s on the 2-core machine.
@pytest.mark.slow
def test_demo_dublin_scenario_prints_confirmed_decisions(tmp_path: Path) -> None:
    result = _fedmatch(
        "demo", "--scenario", "dublin", "--records", "500", "--workdir", str(tmp_path)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["scenario"] == "dublin" and summary["ok"]
    cases = {c["case"]: c for c in summary["cases"]}
    got = {
        name: (c["criterion"], c["responsible_state"], c["procedure"]) for name, c in cases.items()
    }
    assert got == {
        "irregular_entry": ("irregular_entry", "IT", "take_charge"),
        # AMMR Art. 36(1)(b): to the state FR's record indicates, not to FR.
        "take_back_ammr_indicated": ("first_application", "IT", "take_back"),
        # AMMR Art. 38(4): none indicated, the state of first registration.
        "take_back_ammr_determining": ("first_application", "FR", "take_back"),
        "take_back_dublin_iii": ("first_application", "FR", "take_back"),
        "family_outranks_hit": ("family", "FR", "take_charge"),
        # Eurodac recast Art. 31(1): no Dublin case, no state.
        "protection_granted_elsewhere": ("protection_granted", "", "protection_elsewhere"),
    }
    assert [c["regime"] for c in summary["cases"]] == ["ammr"] * 3 + ["dublin_iii"] + ["ammr"] * 2
    bases = {name: c["basis"] for name, c in cases.items()}
    assert bases["take_back_ammr_indicated"].startswith("the AMMR (Reg. 2024/1351) Art. 36(1)(b)")
    assert bases["take_back_ammr_determining"] == "the AMMR (Reg. 2024/1351) Art. 38(4)"
    assert bases["take_back_dublin_iii"] == "Dublin III (Reg. 604/2013) Art. 18(1)(d)"
    # The hit that the family criterion outranks is still there, verified and resolved.
    assert [h["member_state"] for h in cases["family_outranks_hit"]["hits"]] == ["IT"]
    assert cases["family_outranks_hit"]["hit_rule_decision"] == "IT"
    registered = dt.date.fromisoformat(summary["registration_date"])
    # AMMR: a take back notification within 2 weeks of the hit, received on the lookup day;
    # the notified state confirms within 2 more weeks, its silence is confirmation.
    (notification,) = cases["take_back_ammr_determining"]["deadlines"]
    due = registered + dt.timedelta(weeks=2)
    assert notification["due"] == due.isoformat()
    assert "does not end" in notification["consequence"]
    assert (
        notification["follow_on"]["confirmation_due"] == (due + dt.timedelta(weeks=2)).isoformat()
    )
    protected = cases["protection_granted_elsewhere"]
    assert protected["deadlines"] == [] and protected["form"] is None
    assert "protection_granted" in protected["flags"] and protected["confirmation"] is None
    forms = {name: c["form"] for name, c in cases.items() if c["form"] is not None}
    assert {name: f["kind"] for name, f in forms.items()} == {
        "irregular_entry": "take_charge_request",
        "take_back_ammr_indicated": "take_back_notification",
        "take_back_ammr_determining": "take_back_notification",
        "take_back_dublin_iii": "take_back_request",
        "family_outranks_hit": "take_charge_request",
    }
    for name, form in forms.items():
        assert form["requested_state"] == cases[name]["responsible_state"]
        assert form["legal_basis"] == cases[name]["basis"]
        page = Path(form["html"]).read_text()
        assert Path(form["html"]).is_relative_to(tmp_path) and "PROPOSAL" in page
        assert form["dublinet_reference"] in page
    # The Eurodac reference of the record behind the hit, the verifiers who compared it.
    assert forms["take_back_dublin_iii"]["dublinet_reference"].startswith("DE2FR-")
    assert {
        v["verifier"].split(".")[0] for v in forms["take_back_dublin_iii"]["verification_record"]
    } == {"anna", "ben"}
    assert {e["list"] for e in forms["take_back_dublin_iii"]["evidence"]} == {"A"}
    confirmed = [c for c in cases.values() if c["confirmation"] is not None]
    for case in confirmed:
        assert case["confirmation"]["action"] == "accept"
        assert case["confirmation"]["responsible_state"] == case["responsible_state"]
    assert all(case["complete"] for case in cases.values())
    assert summary["audit"]["ok"] and summary["audit"]["violations"] == 0
    assert summary["audit"]["decisions_confirmed_logged"] == len(confirmed) == 5
