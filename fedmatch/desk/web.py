"""What every page of the desk shares: the desk's state in the Flask app, the logged-in
person, role checks, the CSRF token, the security headers and the error pages.

Every response carries a strict Content-Security-Policy (only the desk's own scripts,
styles and images; no inline code, no frames), ``Cache-Control: no-store`` (images of
people and case data stay out of caches), ``X-Content-Type-Options: nosniff`` and
``Referrer-Policy: no-referrer``. Every POST carries the session's CSRF token.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import flask
from werkzeug.wrappers import Response

from fedmatch.desk.accounts import Accounts, Unlocked
from fedmatch.desk.config import DeskConfig
from fedmatch.desk.sessions import SessionStore
from fedmatch.errors import (
    AlreadyExists,
    FedmatchError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    ResourceLimit,
)

__all__ = [
    "CSP",
    "Desk",
    "csrf_token",
    "current_user",
    "desk",
    "error_page",
    "install",
    "requires",
]

log = logging.getLogger("fedmatch.desk")

CSP = (
    "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
_STATUS: tuple[tuple[type[FedmatchError], int], ...] = (
    (PermissionDenied, 403),
    (NotFound, 404),
    (AlreadyExists, 409),
    (PreconditionFailed, 409),
    (ResourceLimit, 429),
    (InvalidInput, 400),
)

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class Desk:
    """The desk's state, one per app: its config, who may log in, the live sessions, and
    how the official's Requester is made (replaceable by a test)."""

    config: DeskConfig
    accounts: Accounts
    sessions: SessionStore
    connect: Callable[..., Any]


def desk() -> Desk:
    found: Desk = flask.current_app.extensions["fedmatch.desk"]
    return found


def current_user() -> Unlocked | None:
    user: Unlocked | None = flask.g.get("user")
    return user


def csrf_token() -> str:
    token = flask.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        flask.session["csrf"] = token
    return token


def requires(role: str) -> Callable[[Callable[P, R]], Callable[P, R | Response]]:
    """A view for a logged-in ``role`` (``verifier`` or ``officer``); others go to login."""

    def wrap(view: Callable[P, R]) -> Callable[P, R | Response]:
        @functools.wraps(view)
        def checked(*args: P.args, **kwargs: P.kwargs) -> R | Response:
            user = current_user()
            if user is None:
                return flask.redirect(flask.url_for("login"))
            if user.account.role != role:
                raise PermissionDenied(f"this page is for the {role} role")
            return view(*args, **kwargs)

        return checked

    return wrap


def _load_user() -> None:
    """Before each request: the live session (or none), and the CSRF check of a POST."""
    sid = flask.session.get("sid")
    flask.g.user = None
    if isinstance(sid, str):
        found = desk().sessions.get(sid)
        if found is None:
            flask.session.pop("sid", None)
            flask.flash("Your session ended: log in again.", "info")
        else:
            flask.g.user = found.user
    if flask.request.method == "POST":
        sent = flask.request.form.get("csrf", "")
        expected = flask.session.get("csrf")
        if not isinstance(expected, str) or not secrets.compare_digest(sent, expected):
            log.warning("POST %s without a valid CSRF token refused", flask.request.path)
            flask.abort(400, "The form expired or came from elsewhere: reload and try again.")


def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def error_page(message: str, status: int) -> tuple[str, int]:
    return flask.render_template("error.html", message=message, status=status), status


def _domain_error(exc: FedmatchError) -> tuple[str, int]:
    status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
    # Domain messages name fields, files and rules, never images, keys or passphrases.
    log.info("%s %s: %d %s", flask.request.method, flask.request.path, status, exc)
    return error_page(str(exc), status)


def _http_error(exc: Any) -> tuple[str, int]:
    code = int(getattr(exc, "code", 500) or 500)
    return error_page(str(getattr(exc, "description", "")) or "Request refused.", code)


def install(app: flask.Flask, state: Desk) -> None:
    app.extensions["fedmatch.desk"] = state
    app.before_request(_load_user)
    app.after_request(_headers)
    app.register_error_handler(FedmatchError, _domain_error)
    for code in (400, 403, 404, 405, 413):
        app.register_error_handler(code, _http_error)
    app.context_processor(lambda: {"csrf_token": csrf_token, "user": current_user()})
