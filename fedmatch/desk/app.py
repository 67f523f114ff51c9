"""The desk's web application: :func:`create_app` builds it from a :class:`DeskConfig`.

Pages: the login (a verifier or the official picks their name and gives their passphrase),
the verifier's worklist and candidate comparison (:mod:`fedmatch.desk.verifier_views`) and
the official's lookups (:mod:`fedmatch.desk.officer_views`). Flask serves the pages from
Jinja2 templates and the desk's own CSS and script; the security plumbing is in
:mod:`fedmatch.desk.web`. Each start has a new random cookie secret: a restart logs
everyone out.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import flask
from werkzeug.wrappers import Response

from fedmatch.desk import officer, officer_views, verifier_views
from fedmatch.desk.accounts import Accounts
from fedmatch.desk.config import DeskConfig
from fedmatch.desk.sessions import SessionStore
from fedmatch.desk.web import Desk, current_user, desk, install
from fedmatch.errors import PermissionDenied, ResourceLimit

__all__ = ["create_app"]

# A login form, a verdict or a resolve form: a few hundred bytes.
_MAX_FORM_BYTES = 16 * 1024


def _home() -> Response:
    user = current_user()
    if user is None:
        return flask.redirect(flask.url_for("login"))
    if user.account.role == "officer":
        return flask.redirect(flask.url_for("officer.cases"))
    return flask.redirect(flask.url_for("verifier.worklist"))


def _login() -> Response | tuple[str, int] | str:
    state = desk()
    error = ""
    status = 200
    if flask.request.method == "POST":
        name = flask.request.form.get("name", "")
        passphrase = flask.request.form.get("passphrase", "")
        try:
            user = state.accounts.login(name, passphrase, flask.request.remote_addr or "")
        except (PermissionDenied, ResourceLimit) as exc:
            error, status = str(exc), 429 if isinstance(exc, ResourceLimit) else 401
        else:
            old = flask.session.get("sid")
            if isinstance(old, str):
                state.sessions.close(old)
            # A new session id and CSRF token at login (no fixation of either).
            flask.session.clear()
            flask.session["sid"] = state.sessions.open(user)
            flask.session["csrf"] = secrets.token_urlsafe(32)
            return flask.redirect(flask.url_for("home"))
    body = flask.render_template(
        "login.html", accounts=state.accounts.accounts, error=error,
        chosen=flask.request.form.get("name", ""),
    )  # fmt: skip
    return body, status


def _logout() -> Response:
    sid = flask.session.get("sid")
    if isinstance(sid, str):
        desk().sessions.close(sid)
    flask.session.clear()
    flask.flash("You are logged out; your key was dropped from the desk's memory.", "info")
    return flask.redirect(flask.url_for("login"))


def create_app(config: DeskConfig, connect: Callable[..., Any] | None = None) -> flask.Flask:
    """The desk for ``config``. ``connect(officer_config, key) -> Requester`` makes the
    official's client of the coordinator (default :func:`fedmatch.desk.officer.connect`)."""
    app = flask.Flask(__name__)
    app.secret_key = secrets.token_bytes(32)
    app.config.update(
        SESSION_COOKIE_NAME="fedmatch_desk",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=config.tls is not None,
        MAX_CONTENT_LENGTH=_MAX_FORM_BYTES,
        TEMPLATES_AUTO_RELOAD=False,
    )
    state = Desk(
        config,
        Accounts(config),
        SessionStore(config.idle_minutes * 60.0),
        connect or officer.connect,
    )
    install(app, state)
    app.add_url_rule("/", "home", _home)
    app.add_url_rule("/login", "login", _login, methods=["GET", "POST"])
    app.add_url_rule("/logout", "logout", _logout, methods=["POST"])
    app.register_blueprint(verifier_views.bp)
    app.register_blueprint(officer_views.bp)
    return app
