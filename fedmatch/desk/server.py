"""Serving the desk: Werkzeug's threaded WSGI server, HTTPS when ``[desk]`` names a
certificate. :func:`running` is a context manager that always stops the server (what the
tests use, on port 0); :func:`serve` runs until Ctrl-C (``fedmatch desk serve``).

Plain HTTP is for this machine only: on any other address it needs ``--dev-insecure``,
warned about at every start (or put a TLS-terminating proxy in front and listen on
loopback).
"""

from __future__ import annotations

import ipaddress
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import flask
from werkzeug.serving import BaseWSGIServer, make_server

from fedmatch.desk.config import DeskConfig, parse_listen
from fedmatch.errors import ConfigError

__all__ = ["INSECURE_WARNING", "running", "serve", "url_of"]

log = logging.getLogger("fedmatch.desk")

INSECURE_WARNING = (
    "WARNING: --dev-insecure: the desk serves PLAIN HTTP on {address}: passphrases, images "
    "and session cookies cross the network in clear. For development only."
)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_of(server: BaseWSGIServer, tls: bool) -> str:
    host = str(server.host)
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{server.port}/"


def _server(app: flask.Flask, config: DeskConfig, insecure: bool) -> BaseWSGIServer:
    host, port = parse_listen(config.listen)
    if config.tls is None and not _loopback(host):
        if not insecure:
            raise ConfigError(
                f"desk.listen {config.listen}: plain HTTP off this machine; give desk.tls_cert "
                "and desk.tls_key (or listen on 127.0.0.1 behind a TLS proxy)"
            )
        print(INSECURE_WARNING.format(address=config.listen), file=sys.stderr, flush=True)
    tls = None if config.tls is None else (str(config.tls[0]), str(config.tls[1]))
    try:
        return make_server(host, port, app, threaded=True, ssl_context=tls)
    except OSError as exc:
        raise ConfigError(f"desk.listen {config.listen}: could not bind ({exc.strerror})") from None
    except SystemExit:
        # Werkzeug exits on a port in use (after saying so on stderr); only the CLI exits.
        raise ConfigError(f"desk.listen {config.listen}: could not bind (in use)") from None


@contextmanager
def running(app: flask.Flask, config: DeskConfig, insecure: bool = False) -> Iterator[str]:
    """Serve ``app`` in a thread; yields its URL; stops it on the way out."""
    server = _server(app, config, insecure)
    thread = threading.Thread(target=server.serve_forever, name="desk", daemon=True)
    thread.start()
    try:
        yield url_of(server, config.tls is not None)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def serve(
    app: flask.Flask,
    config: DeskConfig,
    insecure: bool = False,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until interrupted; ``ready(url)`` is called once it listens."""
    server = _server(app, config, insecure)
    url = url_of(server, config.tls is not None)
    log.info("desk serving on %s (cases in %s)", url, config.cases)
    if ready is not None:
        ready(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
