"""Fixtures: a real Centrifugo v6 on a free loopback port, and clients that connect to it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from instant_signals import client as http_client
from instant_signals import installer
from instant_signals.centrifugo_config import generate_config, write_config
from tests.processes import CentrifugoProcess, free_port

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def need(condition: bool, what: str) -> None:
    """Skip locally when an optional tool is missing; in CI a missing tool is a failure."""
    if not condition:
        if IN_CI:
            pytest.fail(f"{what} is required in CI but missing", pytrace=False)
        pytest.skip(f"{what} is not available here")


@pytest.fixture(scope="session")
def centrifugo_binary() -> Path:
    try:
        return installer.find_or_install(download=False, build=False)
    except installer.InstallError as exc:
        pytest.fail(f"no Centrifugo binary: {exc}\nRun ./scripts/test, which installs it.",
                    pytrace=False)


def start_centrifugo(binary: Path, workdir: Path, *, client: dict | None = None,
                     **options) -> CentrifugoProcess:
    """Centrifugo with the config installws would write for the test app's declarations;
    ``client`` adds keys to its ``client`` section (e.g. ``recovery_max_publication_limit``)."""
    from instant_signals.registry import broadcast_registry

    options.setdefault("namespaces", broadcast_registry.namespaces())
    config = generate_config(port=free_port(), **options)
    config["client"].update(client or {})
    path = write_config(workdir / f"centrifugo-{config['http_server']['port']}.json", config)
    return CentrifugoProcess(binary, path).start()


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
    from tests.live import LiveClient

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

    from tests.services import start_postgres

    server = start_postgres()
    request.session.config.add_cleanup(server.cleanup)
    settings.DATABASES["pg"].update(HOST="127.0.0.1", PORT=str(server.port),
                                    USER=server.user)


def which(name: str) -> str | None:
    return shutil.which(name)
