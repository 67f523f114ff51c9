"""The desk's web application through Flask's test client: the security plumbing (headers,
cookie, CSRF, login back-off, idle sessions, key checks), the verifier's rules (one verdict
per candidate, reasons, images checked against their hashes, own state only) and the
official's resolve and confirmation with a stand-in for the coordinator. The same flows in
a real browser: tests/integration/test_desk_browser.py."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import flask
import grpc
import pytest
from cryptography import x509
from flask.testing import FlaskClient

from fedmatch.desk import worklist
from fedmatch.desk.accounts import Accounts
from fedmatch.desk.app import create_app
from fedmatch.desk.cases import find_case, hit_label
from fedmatch.desk.config import load_config
from fedmatch.desk.sessions import SessionStore
from fedmatch.desk.verdicts import verdict_file
from fedmatch.desk.web import CSP, Desk
from fedmatch.domain import Sex
from fedmatch.pki.ca import revoke
from fedmatch.protocol.packet import CandidatePacket
from fedmatch.protocol.wire import encode_handle
from tests.desk_case import (
    OFFICER,
    OFFICER_PASSPHRASE,
    PASSPHRASES,
    PROPOSAL_DIGEST,
    STATE,
    UNIT,
    DeskWorld,
    FakeRequester,
    build,
    unlocked_signer,
    verifier_name,
    write_case,
)

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world(tmp_path: Path) -> DeskWorld:
    return build(tmp_path, officer=True)


@pytest.fixture
def fake() -> FakeRequester:
    return FakeRequester()


@pytest.fixture
def app(world: DeskWorld, fake: FakeRequester) -> flask.Flask:
    return create_app(world.config, connect=lambda config, key: fake)


@pytest.fixture
def client(app: flask.Flask) -> Iterator[FlaskClient]:
    with app.test_client() as c:
        yield c


def state(app: flask.Flask) -> Desk:
    found: Desk = app.extensions["fedmatch.desk"]
    return found


def csrf(client: FlaskClient, path: str = "/login") -> str:
    match = _CSRF.search(client.get(path).text)
    assert match is not None
    return match.group(1)


def login(client: FlaskClient, name: str, passphrase: str) -> Any:
    return client.post(
        "/login", data={"csrf": csrf(client), "name": name, "passphrase": passphrase}
    )


def login_verifier(client: FlaskClient, person: str) -> str:
    done = login(client, verifier_name(person), PASSPHRASES[person])
    assert done.status_code == 302, done.text
    return csrf(client, "/work")


def candidate_url(world: DeskWorld, index: int, suffix: str = "") -> str:
    return f"/cases/{world.case.query_id}/hits/{hit_label(world.hits[index])}{suffix}"


def test_every_response_carries_the_security_headers(client: FlaskClient, world: DeskWorld) -> None:
    page = client.get("/login")
    assert page.status_code == 200
    assert page.headers["Content-Security-Policy"] == CSP
    assert "default-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert '<html lang="en">' in page.text
    assert client.get("/static/desk.css").headers["Cache-Control"] == "no-store"
    done = login(client, verifier_name("anna"), PASSPHRASES["anna"])
    cookie = done.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    image = client.get(candidate_url(world, 0, "/image"))
    assert image.status_code == 200 and image.headers["Cache-Control"] == "no-store"


def test_a_tls_desk_marks_its_cookie_secure(world: DeskWorld) -> None:
    config = replace(world.config, tls_cert=world.config_path, tls_key=world.config_path)
    assert create_app(config).config["SESSION_COOKIE_SECURE"] is True


def test_each_start_has_its_own_cookie_secret(world: DeskWorld) -> None:
    assert create_app(world.config).secret_key != create_app(world.config).secret_key


def test_a_post_without_the_csrf_token_is_refused(client: FlaskClient, world: DeskWorld) -> None:
    refused = client.post(
        "/login", data={"name": verifier_name("anna"), "passphrase": PASSPHRASES["anna"]}
    )
    assert refused.status_code == 400
    login_verifier(client, "anna")
    forged = client.post(
        candidate_url(world, 0, "/verdict"), data={"csrf": "x" * 43, "verdict": "confirm"}
    )
    assert forged.status_code == 400
    assert not world.case.verdicts_dir.exists()


def test_pages_and_images_need_a_login(client: FlaskClient, world: DeskWorld) -> None:
    for path in (
        "/work",
        candidate_url(world, 0),
        candidate_url(world, 0, "/image"),
        f"/cases/{world.case.query_id}/probe",
        "/officer/",
    ):
        answer = client.get(path)
        assert answer.status_code == 302 and answer.headers["Location"] == "/login", path


def test_a_failed_login_backs_off_and_never_logs_the_passphrase(
    app: flask.Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    state(app).accounts = Accounts(state(app).config, clock=clock)
    name = verifier_name("ben")
    caplog.set_level(logging.INFO, logger="fedmatch.desk")
    wrong = login(client, name, "not-bens-passphrase")
    assert wrong.status_code == 401 and "wrong name or passphrase" in wrong.text
    early = login(client, name, PASSPHRASES["ben"])
    assert early.status_code == 429 and "try again in 1 s" in early.text
    clock.now += 1.1
    assert login(client, name, "still-not-bens").status_code == 401
    clock.now += 1.1
    assert "try again in 1 s" in login(client, name, PASSPHRASES["ben"]).text  # 2 s now
    clock.now += 1.0
    assert login(client, name, PASSPHRASES["ben"]).status_code == 302
    assert "failed" in caplog.text and name in caplog.text
    for secret in ("not-bens-passphrase", "still-not-bens", PASSPHRASES["ben"]):
        assert secret not in caplog.text
    assert login(client, "nobody", "whatever-it-is").status_code == 401


def test_an_idle_session_ends_and_its_key_is_dropped(app: flask.Flask, client: FlaskClient) -> None:
    clock = Clock()
    state(app).sessions = SessionStore(15 * 60, clock=clock)
    login_verifier(client, "anna")
    assert client.get("/work").status_code == 200
    clock.now += 14 * 60
    assert client.get("/work").status_code == 200  # activity restarts the idle clock
    clock.now += 15 * 60 + 1
    ended = client.get("/work")
    assert ended.status_code == 302 and ended.headers["Location"] == "/login"
    assert len(state(app).sessions) == 0
    assert "Your session ended" in client.get("/login").text


def test_logout_drops_the_session(app: flask.Flask, client: FlaskClient) -> None:
    token = login_verifier(client, "anna")
    assert len(state(app).sessions) == 1
    assert client.post("/logout", data={"csrf": token}).status_code == 302
    assert len(state(app).sessions) == 0
    assert client.get("/work").status_code == 302


def test_a_key_the_certificate_does_not_bind_is_refused(world: DeskWorld) -> None:
    text = world.config_path.read_text().replace('"keys/anna.key.enc"', '"keys/ben.key.enc"')
    swapped = world.root / "swapped.toml"
    swapped.write_text(text)
    with create_app(load_config(swapped)).test_client() as c:
        refused = login(c, verifier_name("anna"), PASSPHRASES["ben"])
    assert refused.status_code == 401
    assert "binds another signing key" in refused.text


def test_a_revoked_verifier_cannot_log_in(world: DeskWorld, client: FlaskClient) -> None:
    chain = world.parties[f"verifier-anna-{STATE}"].tls.chain.read_bytes()
    serial = x509.load_pem_x509_certificates(chain)[0].serial_number
    revoke(world.root / "pki" / "ca", STATE.lower(), serial)
    refused = login(client, verifier_name("anna"), PASSPHRASES["anna"])
    assert refused.status_code == 401 and "revoked" in refused.text
    assert login(client, verifier_name("ben"), PASSPHRASES["ben"]).status_code == 302


def test_one_verdict_per_candidate_and_a_reject_needs_a_reason(
    client: FlaskClient, world: DeskWorld
) -> None:
    token = login_verifier(client, "anna")
    bad = client.post(
        candidate_url(world, 1, "/verdict"),
        data={"csrf": token, "verdict": "reject", "reason": "looks odd"},
    )
    assert bad.status_code == 400 and "reason" in bad.text
    assert not world.case.verdicts_dir.exists()
    url = candidate_url(world, 0, "/verdict")
    assert client.post(url, data={"csrf": token, "verdict": "confirm"}).status_code == 302
    again = client.post(url, data={"csrf": token, "verdict": "reject", "reason": "inconclusive"})
    assert again.status_code == 409 and "already gave a verdict" in again.text
    kept = json.loads(verdict_file(world.case, verifier_name("anna")).read_text())
    assert len(kept["verdicts"]) == 1


def test_an_image_changed_at_the_desk_is_neither_shown_nor_signed(
    client: FlaskClient, world: DeskWorld
) -> None:
    token = login_verifier(client, "anna")
    path = world.case.packets.image_path(world.hits[0])
    assert path is not None
    path.write_bytes(world.probe_image)
    shown = client.get(candidate_url(world, 0, "/image"))
    assert shown.status_code == 409 and "not the one its packet names" in shown.text
    signed = client.post(
        candidate_url(world, 0, "/verdict"), data={"csrf": token, "verdict": "confirm"}
    )
    assert signed.status_code == 409
    assert not world.case.verdicts_dir.exists()


def test_a_verifier_sees_only_the_lookups_of_their_state(
    client: FlaskClient, world: DeskWorld
) -> None:
    other = write_case(
        world.cases,
        "it-0002",
        world.probe_image,
        [CandidatePacket("FR", encode_handle(1, 1), world.probe_image, Sex.MALE, "", "", 0.5)],
        Sex.MALE,
    )
    # Another state's lookup: written here as DE's, then relabelled IT's.
    text = other.path.read_text().replace('"requesting_state": "DE"', '"requesting_state": "IT"')
    other.path.write_text(text)
    login_verifier(client, "anna")
    page = client.get("/work").text
    assert world.case.query_id in page and other.query_id not in page
    url = f"/cases/{other.query_id}/hits/{hit_label(other.hits[0])}"
    assert client.get(url).status_code == 404
    assert client.get(f"/cases/{other.query_id}/probe").status_code == 404


def test_the_officer_page_is_the_officers(client: FlaskClient) -> None:
    login_verifier(client, "anna")
    assert client.get("/officer/").status_code == 403


def _decide_all(world: DeskWorld) -> None:
    anna, ben = unlocked_signer(world, "anna"), unlocked_signer(world, "ben")
    case = find_case(world.cases, world.case.query_id)
    for signer in (anna, ben):
        worklist.sign(case, world.hits[0], signer, STATE)
    worklist.sign(case, world.hits[1], anna, STATE, reject="different_person")
    worklist.sign(case, world.hits[2], ben, STATE, reject="insufficient_quality")


def login_officer(client: FlaskClient) -> str:
    done = login(client, OFFICER, OFFICER_PASSPHRASE)
    assert done.status_code == 302 and done.headers["Location"] == "/", done.text
    return csrf(client, "/officer/")


def test_the_officer_resolves_and_confirms(
    client: FlaskClient, world: DeskWorld, fake: FakeRequester
) -> None:
    token = login_officer(client)
    waiting = client.get("/officer/").text
    assert "Waiting for verdicts" in waiting and "Resolve</button>" not in waiting
    early = client.post(
        f"/officer/{world.case.query_id}/resolve",
        data={"csrf": token, "application_date": "2026-01-05"},
    )
    assert early.status_code == 409 and not fake.resolved
    _decide_all(world)
    ready = client.get("/officer/").text
    assert "Resolve</button>" in ready
    assert ready.count("<td>rejected</td>") == 2 and "<td>verified</td>" in ready
    done = client.post(
        f"/officer/{world.case.query_id}/resolve",
        data={"csrf": token, "application_date": "2026-01-05"},
    )
    assert done.status_code == 302
    ((report, date, verdicts),) = fake.resolved
    assert date == "2026-01-05" and len(verdicts) == 4
    assert report.header == world.case.header and len(report.matches) == 3
    kept = json.loads(world.case.resolve_path.read_text())
    assert kept["proposal"]["digest"] == PROPOSAL_DIGEST
    assert kept["decision"]["responsible_state"] == "IT"
    page = client.get("/officer/").text
    assert "2026-03-01" in page and "Confirm decision</button>" in page
    confirmed = client.post(f"/officer/{world.case.query_id}/confirm", data={"csrf": token})
    assert confirmed.status_code == 302
    ((header, digest),) = fake.confirmed
    assert digest == PROPOSAL_DIGEST
    assert (header.operator, header.unit) == (OFFICER, UNIT)
    assert header.query_id == world.case.query_id
    decision = json.loads(world.case.decision_path.read_text())
    assert decision["official"] == OFFICER and decision["log_index"] == 7
    assert f"Confirmed by {OFFICER}" in client.get("/officer/").text
    assert fake.closed == 2


class _Refused(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.PERMISSION_DENIED

    def details(self) -> str:
        return "a verdict names other images than the ones released"


def test_a_refusal_of_the_coordinator_is_shown(
    client: FlaskClient, world: DeskWorld, fake: FakeRequester
) -> None:
    fake.refuse = _Refused()
    token = login_officer(client)
    _decide_all(world)
    answer = client.post(
        f"/officer/{world.case.query_id}/resolve",
        data={"csrf": token, "application_date": "2026-01-05"},
        follow_redirects=True,
    )
    assert "PERMISSION_DENIED" in answer.text and "other images" in answer.text
    assert not world.case.resolve_path.exists()
