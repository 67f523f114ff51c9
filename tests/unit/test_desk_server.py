"""Serving the desk (fedmatch.desk.server): HTTPS when ``[desk]`` names a certificate, and
plain HTTP only on loopback unless ``--dev-insecure`` says otherwise, loudly."""

from __future__ import annotations

import ssl
import urllib.request
from dataclasses import replace

import pytest

from fedmatch.desk.app import create_app
from fedmatch.desk.server import running
from fedmatch.errors import ConfigError
from tests.desk_case import DeskWorld, build


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> DeskWorld:
    return build(tmp_path_factory.mktemp("desk"))


def test_the_desk_serves_https_with_its_certificate(world: DeskWorld) -> None:
    # Any certificate of the federation's PKI serves here (a node's, for the test).
    tls = world.parties["node-DE"].tls
    config = replace(world.config, tls_cert=tls.chain, tls_key=tls.key)
    trust = ssl.create_default_context(cafile=str(tls.root))
    trust.check_hostname = False
    with running(create_app(config), config) as url:
        assert url.startswith("https://127.0.0.1:")
        with urllib.request.urlopen(url + "login", context=trust, timeout=10) as answer:
            assert answer.status == 200
            assert answer.headers["Cache-Control"] == "no-store"
            assert b'<html lang="en">' in answer.read()


def test_plain_http_off_this_machine_needs_the_insecure_flag(
    world: DeskWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    config = replace(world.config, listen="0.0.0.0:0")
    app = create_app(config)
    with pytest.raises(ConfigError, match="plain HTTP off this machine"), running(app, config):
        pass
    with running(app, config, insecure=True) as url:
        assert url.startswith("http://0.0.0.0:")
    assert "WARNING: --dev-insecure" in capsys.readouterr().err


def test_a_busy_port_is_named(world: DeskWorld) -> None:
    app = create_app(world.config)
    with running(app, world.config) as url:
        port = url.rsplit(":", 1)[1].rstrip("/")
        busy = replace(world.config, listen=f"127.0.0.1:{port}")
        with pytest.raises(ConfigError, match="could not bind"), running(app, busy):
            pass
