"""Issue 16 end to end, over real servers and in a real browser: photos enrolled at IT's
node, a lookup from DE, the verification packet released for the proven candidate only,
two verifiers' verdicts given at the desk in Chromium, the official's resolve and confirmed
decision at the desk; what every party logged agrees."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from fedmatch.audit.entry import EventKind
from fedmatch.biometrics.pipeline import FacePipeline
from fedmatch.desk.app import create_app
from fedmatch.desk.config import load_config
from fedmatch.desk.server import running
from fedmatch.domain import Purpose, Sex
from fedmatch.pki.keystore import protect
from fedmatch.protocol.packet import image_digest
from fedmatch.protocol.verification import VerdictStatement, read_verdicts
from fedmatch.protocol.wire import encode_handle
from fedmatch.requester.candidates import write_candidates
from fedmatch.requester.packets import PacketFolder, packets_path
from tests.browser import heading, images_loaded, left, needs_chromium, submit
from tests.desk_case import FACES, faces_by_identity
from tests.federation import (
    OPERATOR,
    OTHER_OFFICER,
    Federation,
    enrol_photo,
    expert_name,
    federation,
    pki,
)

pytestmark = needs_chromium

PASSPHRASE = {"anna": "anna-e2e-passphrase", "ben": "ben-e2e-passphrase"}
# The official at the desk: another officer than the one who looked up (OPERATOR), each
# with their own certificate; the logs name who signed each request.
OFFICIAL = OTHER_OFFICER
OFFICIAL_PASSPHRASE = "official-e2e-passphrase"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation(tmp_path_factory.mktemp("desk-e2e"), ("DE", "IT", "FR"), records=20) as f:
        yield f


def _desk_toml(fed: Federation, cases: Path) -> Path:
    """The desk of DE: its two verifiers and its official, keys under passphrases."""
    root = fed.tmp / "desk"
    root.mkdir()
    parties = pki(fed.tmp)
    lines = ["[desk]", f'cases = "{cases}"', 'listen = "127.0.0.1:0"']
    for person in ("anna", "ben"):
        party = parties[f"verifier-{person}-DE"]
        protect(party.signer(), PASSPHRASE[person], root / f"{person}.key.enc")
        lines += ["[[verifier]]", f'chain = "{party.tls.chain}"', f'key = "{person}.key.enc"']
    # The official: their own officer certificate and key (the workstation's [tls] only
    # makes the channel to the coordinator).
    official = parties[f"officer-{OFFICIAL}-DE"]
    protect(official.signer(), OFFICIAL_PASSPHRASE, root / "official.key.enc")
    tls = parties["operator-DE"].tls
    crls = ", ".join(f'"{c}"' for c in tls.crls)
    (root / "operator.toml").write_text(
        f'[tls]\nkey = "{tls.key}"\nchain = "{tls.chain}"\nroot = "{tls.root}"\ncrls = [{crls}]\n'
    )
    lines += [
        "[officer]", f'chain = "{official.tls.chain}"', 'unit = "dublin-unit-1"',
        'operator = "operator.toml"', f'coordinator = "{fed.coordinator_server.address}"',
        'key = "official.key.enc"',
    ]  # fmt: skip
    path = root / "desk.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _log_in(browser: WebDriver, desk: str, name: str, passphrase: str) -> None:
    browser.get(desk + "login")
    browser.delete_all_cookies()
    browser.get(desk + "login")
    Select(browser.find_element(By.ID, "name")).select_by_value(name)
    browser.find_element(By.ID, "passphrase").send_keys(passphrase)
    submit(browser, browser.find_element(By.ID, "login"))


def test_photos_to_a_confirmed_decision_through_the_desk(
    fed: Federation,
    browser: WebDriver,
    tmp_path: Path,
) -> None:
    people = faces_by_identity()
    person = sorted(people)[1]
    enrol_photo(fed, "IT", (FACES / people[person][0]).read_bytes(), "IT-E2E-1", Sex.MALE)
    other = sorted(people)[2]
    enrol_photo(fed, "IT", (FACES / people[other][0]).read_bytes(), "IT-E2E-2", Sex.FEMALE)
    probe_photo = (FACES / people[person][1]).read_bytes()

    requester = fed.requester("DE")
    header = requester.header(Purpose.ASYLUM_DUBLIN, "Reg. (EU) 2024/1358 Art. 27", "DE-E2E")
    report = requester.lookup(FacePipeline().template(FACES / people[person][1]), header)
    assert [s for s, _ in report.matches] == ["IT"]
    cases = tmp_path / "cases"
    cases.mkdir()
    candidates = cases / "DE-E2E.json"
    write_candidates(report, candidates)
    fetched = requester.fetch_packets(report, probe_photo)
    (packet,) = fetched.packets  # the proven candidate only
    PacketFolder(packets_path(candidates)).write(
        header.query_id, probe_photo, fetched.packets, Sex.MALE
    )
    # A handle that is not a candidate gets no image (here: any other position).
    handle = report.matches[0][1]
    guess = encode_handle(0, 1 if handle != encode_handle(0, 1) else 2)
    refused = requester.fetch_packets(replace(report, matches=(("IT", guess),)), probe_photo)
    assert refused.packets == () and "IT" in refused.failed

    config = load_config(_desk_toml(fed, cases))
    with running(create_app(config), config) as desk:
        # Two verifiers compare the images side by side and confirm, each blind.
        for person_id in ("anna", "ben"):
            _log_in(browser, desk, expert_name("DE", person_id), PASSPHRASE[person_id])
            assert heading(browser) == "Your worklist"
            worklist = browser.find_element(By.TAG_NAME, "html")
            browser.find_element(By.CSS_SELECTOR, "a.candidate-link").click()
            left(browser, worklist)  # the candidate's page, not the worklist
            probe, candidate = images_loaded(browser)
            assert probe["w"] > 0 and candidate["w"] > 0
            submit(browser, browser.find_element(By.ID, "confirm"))
        # The official resolves and confirms the decision.
        _log_in(browser, desk, OFFICIAL, OFFICIAL_PASSPHRASE)
        browser.get(desk + "officer/")
        section = f"#case-{header.query_id}"
        # The application date is never assumed: the field starts empty and is required.
        field = browser.find_element(By.ID, f"date-{header.query_id}")
        assert field.get_attribute("value") == "" and field.get_attribute("required")
        browser.execute_script("arguments[0].value = '2026-11-21'", field)
        submit(browser, browser.find_element(By.CSS_SELECTOR, f"{section} form button"))
        page = browser.find_element(By.CSS_SELECTOR, section).text
        assert "IT" in page and "Deadlines" in page
        browser.save_screenshot(str(tmp_path / "officer.png"))
        submit(browser, browser.find_element(By.CSS_SELECTOR, f"{section} form button"))
        assert browser.find_element(By.ID, f"confirmed-{header.query_id}").text.startswith(
            f"Confirmed by {OFFICIAL}"
        )

    # The verdicts bound the images released; the node revealed the record once.
    for person_id in ("anna", "ben"):
        name = expert_name("DE", person_id)
        (signed,) = read_verdicts(
            candidates.with_name(candidates.name + ".verdicts") / f"{name}.json"
        )
        statement = VerdictStatement.decode(signed.statement)
        assert statement.probe_image == image_digest(probe_photo)
        assert statement.candidate_image == packet.image_sha256
    node_log = list(fed.nodes["IT"].audit.log.iter_entries())
    mine = [e for e in node_log if e.event.query_id == header.query_id]
    kinds = [e.kind for e in mine]
    assert kinds.count(EventKind.PACKETS_RELEASED) == 1
    assert kinds.count(EventKind.HIT_DETAILS_REVEALED) == 1
    coordinator_log = [
        e for e in fed.coordinator.audit.log.iter_entries() if e.event.query_id == header.query_id
    ]
    confirmed = [e for e in coordinator_log if e.kind is EventKind.DECISION_CONFIRMED]
    assert len(confirmed) == 1
    # Each entry names the officer whose own certificate signed its request.
    assert confirmed[0].event.labels["signer"] == f"{OFFICIAL}.officer.de.fedmatch.eu"
    operators = {e.kind: e.event.operator for e in coordinator_log}
    assert operators[EventKind.SEARCH_AUTHORIZED] == OPERATOR
    assert operators[EventKind.HIT_VERIFIED] == operators[EventKind.DECISION_PROPOSED] == OFFICIAL
    assert {e.event.operator for e in mine if e.kind is EventKind.HIT_DETAILS_REVEALED} == {
        OFFICIAL
    }
    assert {e.kind for e in coordinator_log} >= {
        EventKind.PACKETS_AUTHORIZED,
        EventKind.HIT_VERIFIED,
        EventKind.DECISION_PROPOSED,
    }
