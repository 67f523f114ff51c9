"""The official's pages: the lookups of their state with each hit's confirmations and
rejections, the resolve once every hit is decided, and the confirmation of the proposal.
The federation calls are :mod:`fedmatch.desk.officer`'s; this module only shows them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import flask
import grpc
from werkzeug.wrappers import Response

from fedmatch.desk import officer
from fedmatch.desk.cases import find_case, scan
from fedmatch.desk.web import current_user, desk, requires
from fedmatch.domain import parse_date

__all__ = ["bp"]

log = logging.getLogger("fedmatch.desk")

bp = flask.Blueprint("officer", __name__, url_prefix="/officer")


def _with_requester(action: Callable[[Any], Any]) -> bool:
    """Run ``action(requester)`` over a fresh client of the coordinator; a refusal or an
    unreachable coordinator is flashed (its status and sanitized detail), not raised."""
    user = current_user()
    state = desk()
    assert user is not None and user.officer_key is not None and state.config.officer
    requester = state.connect(state.config.officer, user.officer_key)
    try:
        action(requester)
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        detail = exc.details() if hasattr(exc, "details") else ""
        name = code.name if code is not None else "ERROR"
        log.warning("officer %s: coordinator answered %s: %s", user.account.name, name, detail)
        flask.flash(f"The coordinator answered {name}: {detail}", "error")
        return False
    finally:
        requester.close()
    return True


@bp.get("/", endpoint="cases")
@requires("officer")
def cases_page() -> str:
    user = current_user()
    assert user is not None
    found = [officer.status(c) for c in scan(desk().config.cases, user.account.member_state)]
    # No default date: the application date is always given, never assumed (DOMAIN.md 3).
    return flask.render_template("officer.html", statuses=found)


@bp.post("/<query_id>/resolve")
@requires("officer")
def resolve(query_id: str) -> Response:
    user = current_user()
    assert user is not None
    case = find_case(desk().config.cases, query_id, user.account.member_state)
    date = flask.request.form.get("application_date", "")
    parse_date(date, "application date")
    # The official's explicit choice to resolve although a state did not answer the lookup
    # (the checkbox the page shows only then); logged with the resolve.
    accept = flask.request.form.get("accept_incomplete") == "yes"
    # Checked before connecting: a Requester costs a key generation. An incomplete lookup
    # not accepted is refused here, naming the states (the page shows the message).
    current = officer.check_resolvable(case, accept)
    if current.unanswered:
        log.warning(
            "officer %s accepted resolving lookup %s on an incomplete federation: %s",
            user.account.name, query_id, current.incomplete,
        )  # fmt: skip
    if _with_requester(lambda r: officer.resolve(case, r, date, accept_incomplete=accept)):
        if current.unanswered:
            flask.flash(
                f"The lookup is resolved on an incomplete federation ({current.incomplete}): "
                "the proposal below is provisional.",
                "ok",
            )
        else:
            flask.flash("The lookup is resolved: check the proposal below.", "ok")
    return flask.redirect(flask.url_for("officer.cases") + f"#case-{query_id}")


@bp.post("/<query_id>/confirm")
@requires("officer")
def confirm(query_id: str) -> Response:
    user = current_user()
    state = desk()
    assert user is not None and state.config.officer is not None
    case = find_case(state.config.cases, query_id, user.account.member_state)
    official, unit = state.config.officer.name, state.config.officer.unit
    officer.check_confirmable(case)
    if _with_requester(lambda r: officer.confirm(case, r, official, unit)):
        flask.flash("The decision is confirmed and recorded by the coordinator.", "ok")
    return flask.redirect(flask.url_for("officer.cases") + f"#case-{query_id}")
