"""The verifier's pages: the worklist, one candidate's side-by-side comparison, the verdict,
and the two images (served only to a logged-in verifier of the lookup's state, from the
packet folder, after checking each against the hash its verdict will name)."""

from __future__ import annotations

import logging

import flask
from werkzeug.wrappers import Response

from fedmatch.desk import worklist
from fedmatch.desk.accounts import Unlocked
from fedmatch.desk.cases import find_case, hit_label
from fedmatch.desk.web import current_user, desk, requires
from fedmatch.errors import InvalidInput
from fedmatch.protocol.verification import REJECT_REASONS, VerdictSigner

__all__ = ["bp"]

log = logging.getLogger("fedmatch.desk")

bp = flask.Blueprint("verifier", __name__)

_MIMETYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
REASON_LABELS = {
    "different_person": "Different person",
    "insufficient_quality": "Image quality insufficient to compare",
    "inconclusive": "Inconclusive",
    "data_error": "Data error (wrong image or record)",
}


def _me() -> tuple[Unlocked, VerdictSigner]:
    user = current_user()
    assert user is not None and user.verdict_signer is not None
    return user, user.verdict_signer


def _image(data: bytes, name: str) -> Response:
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    response = Response(data, mimetype=_MIMETYPES.get(suffix, "application/octet-stream"))
    response.headers["Content-Disposition"] = "inline"
    return response


@bp.get("/work", endpoint="worklist")
@requires("verifier")
def worklist_page() -> str:
    user, signer = _me()
    cases = worklist.worklist(desk().config.cases, signer.name, user.account.member_state)
    return flask.render_template("worklist.html", cases=cases, hit_label=hit_label)


@bp.get("/cases/<query_id>/hits/<label>")
@requires("verifier")
def candidate(query_id: str, label: str) -> str:
    user, signer = _me()
    state = user.account.member_state
    case = find_case(desk().config.cases, query_id, state)
    view = worklist.view(case, case.hit(label), signer.name, state)
    return flask.render_template(
        "candidate.html", case=case, view=view, label=label,
        reasons=[(r, REASON_LABELS.get(r, r)) for r in REJECT_REASONS],
        probe=case.packets.probe_path() is not None,
    )  # fmt: skip


@bp.post("/cases/<query_id>/hits/<label>/verdict")
@requires("verifier")
def verdict(query_id: str, label: str) -> Response:
    user, signer = _me()
    state = user.account.member_state
    case = find_case(desk().config.cases, query_id, state)
    hit = case.hit(label)
    chosen = flask.request.form.get("verdict", "")
    if chosen == "confirm":
        worklist.sign(case, hit, signer, state)
        flask.flash("You confirmed the candidate; your verdict is signed.", "ok")
    elif chosen == "reject":
        reason = flask.request.form.get("reason", "")
        if reason not in REJECT_REASONS:
            raise InvalidInput("choose the reason of the rejection")
        worklist.sign(case, hit, signer, state, reject=reason)
        flask.flash(
            "You rejected the candidate; your verdict is signed and its image deleted.", "ok"
        )
    else:
        raise InvalidInput("a verdict is confirm or reject")
    return flask.redirect(flask.url_for("verifier.candidate", query_id=query_id, label=label))


@bp.get("/cases/<query_id>/probe")
@requires("verifier")
def probe_image(query_id: str) -> Response:
    user, _ = _me()
    state = user.account.member_state
    case = find_case(desk().config.cases, query_id, state)
    return _image(*worklist.probe_image(case, state))


@bp.get("/cases/<query_id>/hits/<label>/image")
@requires("verifier")
def candidate_image(query_id: str, label: str) -> Response:
    user, _ = _me()
    state = user.account.member_state
    case = find_case(desk().config.cases, query_id, state)
    return _image(*worklist.candidate_image(case, case.hit(label), state))
