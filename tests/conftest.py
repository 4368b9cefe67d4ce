"""Fixtures: a real Centrifugo v6 on a free loopback port, and clients that connect to it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from instant_signals import client as http_client
from instant_signals import installer
from support.environment import ARTIFACTS, IN_CI, need  # noqa: F401 - tests import them here
from support.processes import CentrifugoProcess, start_centrifugo


@pytest.fixture(scope="session")
def centrifugo_binary() -> Path:
    try:
        return installer.find_or_install(download=False, build=False)
    except installer.InstallError as exc:
        pytest.fail(f"no Centrifugo binary: {exc}\nRun ./scripts/test, which installs it.",
                    pytrace=False)


@pytest.fixture(scope="session")
def centrifugo_server(centrifugo_binary, tmp_path_factory):
    server = start_centrifugo(centrifugo_binary, tmp_path_factory.mktemp("centrifugo"))
    _servers.append(server)
    yield server
    server.stop()
    _servers.remove(server)


def use_server(settings, server: CentrifugoProcess) -> None:
    settings.CENTRIFUGO_API_URL = server.api_url
    settings.CENTRIFUGO_WS_URL = server.ws_url
    settings.CENTRIFUGO_API_KEY = server.api_key
    settings.CENTRIFUGO_HMAC_KEY = server.hmac_key
    http_client.close_session()


@pytest.fixture
def centrifugo(centrifugo_server, settings):
    """The session's Centrifugo, with the Django settings pointing at it."""
    if not centrifugo_server.running():
        centrifugo_server.start()
    use_server(settings, centrifugo_server)
    return centrifugo_server


@pytest.fixture
def live_client(centrifugo):
    """Factory of connected centrifuge-python clients, closed at the end of the test."""
    from support.live import LiveClient

    made = []

    def make(token: str = "", connect: bool = True) -> LiveClient:
        live = LiveClient(centrifugo.ws_url, token=token)
        made.append(live)
        if connect:
            live.connect()
        return live

    yield make
    for live in made:
        live.close()


# Centrifugo's log is attached to the report of every failed test that ran while it was up.
_servers: list[CentrifugoProcess] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for server in _servers:
            report.sections.append((f"Centrifugo log (port {server.port})", server.log()[-4000:]))


def pytest_configure(config):
    ARTIFACTS.mkdir(exist_ok=True)


def wants_postgres(items) -> bool:
    for item in items:
        marker = item.get_closest_marker("django_db")
        if marker and "pg" in (marker.kwargs.get("databases") or ()):
            return True
    return False


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, request):
    """Start a throwaway PostgreSQL cluster when a collected test uses the "pg" database."""
    if not wants_postgres(request.session.items):
        return
    from django.conf import settings

    from support.services import start_postgres

    server = start_postgres()
    request.session.config.add_cleanup(server.cleanup)
    settings.DATABASES["pg"].update(HOST="127.0.0.1", PORT=str(server.port),
                                    USER=server.user)


def which(name: str) -> str | None:
    return shutil.which(name)
