"""``manage.py installws`` and ``manage.py runws`` in a fresh Django project, run as a user would.

The project is written into a temporary folder and driven by subprocesses (``manage.py ...``).
Its Centrifugo is the cached binary; what installws writes is checked by Centrifugo itself
(``checkconfig --strict``) and then used: a real Centrifugo, a real client, a real publish().
"""

from __future__ import annotations

import ast
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from instant_signals import client as http_client
from instant_signals import tokens
from instant_signals.publishing import publish
from support.processes import CentrifugoProcess, free_port

REPO = Path(__file__).resolve().parent.parent

SETTINGS = """
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "fresh-project"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "instant_signals", "chat"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
"""

CHAT_MODELS = """
from django.db import models

from instant_signals import broadcast


def members_only(user, pk):
    return user.is_authenticated


@broadcast(channels=["$room:{pk}", "lobby"], fields=["id", "name"], authorize=members_only)
@broadcast(channels=["board:{pk}"], fields=["id", "name"])
class Room(models.Model):
    name = models.CharField(max_length=50)
"""


@pytest.fixture
def project(tmp_path):
    """A new Django project (``proj``) with one app whose model is declared with @broadcast."""
    root = tmp_path / "site"
    (root / "proj").mkdir(parents=True)
    (root / "chat").mkdir()
    (root / "proj" / "__init__.py").write_text("")
    (root / "proj" / "settings.py").write_text(SETTINGS)
    (root / "chat" / "__init__.py").write_text("")
    (root / "chat" / "models.py").write_text(textwrap.dedent(CHAT_MODELS))
    (root / "manage.py").write_text(textwrap.dedent("""
        import os, sys
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
        from django.core.management import execute_from_command_line
        execute_from_command_line(sys.argv)
    """))
    return root


def manage(project: Path, *args: str, env: dict | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("DJANGO_SETTINGS_MODULE", "CENTRIFUGO_BINARY")}
    environment.update({"PYTHONPATH": str(REPO), **(env or {})})
    # A new session: if a timeout kills it, whatever it started is killed with it.
    process = subprocess.Popen([sys.executable, "manage.py", *args], cwd=project,
                               env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def installws(project: Path, binary: Path, *args: str) -> tuple[dict, dict]:
    """Run installws; return (the printed settings, the config it wrote)."""
    result = manage(project, "installws", "--binary", str(binary), *args)
    assert result.returncode == 0, result.stdout + result.stderr
    printed = {}
    for line in result.stdout.splitlines():
        if line.startswith("CENTRIFUGO_") and " = " in line:
            name, value = line.split(" = ", 1)
            printed[name] = ast.literal_eval(value)
    config_path = Path(args[args.index("--config") + 1]) if "--config" in args else (
        project / ".centrifugo" / "config.json")
    return printed, json.loads(config_path.read_text())


def checkconfig(binary: Path, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), "checkconfig", "--strict", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_fresh_project_gets_a_checked_config_and_settings_that_work(
        project, centrifugo_binary, settings, tmp_path):
    port = free_port()
    printed, config = installws(project, centrifugo_binary, "--port", str(port),
                                "--origin", "http://127.0.0.1:8111")
    config_path = project / ".centrifugo" / "config.json"  # default: <BASE_DIR>/.centrifugo/

    assert checkconfig(centrifugo_binary, config_path).returncode == 0
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600  # it holds secrets
    assert config["http_server"] == {"address": "127.0.0.1", "port": port}
    assert config["client"]["allowed_origins"] == ["http://127.0.0.1:8111"]
    # from @broadcast: "room" holds only private channels, "board" a public one
    namespaces = {ns["name"]: ns for ns in config["channel"]["namespaces"]}
    assert sorted(namespaces) == ["board", "room"]
    assert namespaces["room"]["allow_subscribe_for_client"] is False
    assert namespaces["room"]["allow_subscribe_for_anonymous"] is False
    assert namespaces["board"]["allow_subscribe_for_anonymous"] is True
    assert namespaces["room"]["history_size"] == 300
    assert set(printed) == {"CENTRIFUGO_HOST", "CENTRIFUGO_PORT", "CENTRIFUGO_API_KEY",
                            "CENTRIFUGO_HMAC_KEY", "CENTRIFUGO_WS_URL"}
    assert printed["CENTRIFUGO_API_KEY"] == config["http_api"]["key"]
    assert len(printed["CENTRIFUGO_HMAC_KEY"]) >= 32

    # The printed settings, and nothing else, make publish() reach a real client.
    settings.CENTRIFUGO_API_URL = None
    settings.SITE_NAME = None
    for name, value in printed.items():
        setattr(settings, name, value)
    http_client.close_session()
    from support.live import LiveClient

    with CentrifugoProcess(centrifugo_binary, config_path):
        live = LiveClient(printed["CENTRIFUGO_WS_URL"], token=tokens.connection_token(None))
        try:
            live.connect()
            live.subscribe("lobby")
            live.subscribe("$room:7", token=tokens.subscription_token(None, "$room:7"))
            publish("lobby", "hello", event_class="greeting")
            publish("$room:7", data={"n": 7})
            assert live.wait_for(1, channel="lobby") == [
                {"channel": "lobby", "message": "hello", "event_class": "greeting"}]
            assert live.wait_for(1, channel="$room:7") == [{"channel": "$room:7", "data": {"n": 7}}]
        finally:
            live.close()
            http_client.close_session()


def test_second_run_keeps_the_secrets_and_overwrite_replaces_them(project, centrifugo_binary):
    first, config = installws(project, centrifugo_binary, "--port", str(free_port()))
    port = free_port()
    second, config2 = installws(project, centrifugo_binary, "--port", str(port),
                                "--write-settings", "ws_settings.py")
    assert second == {}  # written into the file instead of printed
    written = {k: v for k, v in vars_of(project / "ws_settings.py").items()
               if k.startswith("CENTRIFUGO_")}
    assert written["CENTRIFUGO_API_KEY"] == first["CENTRIFUGO_API_KEY"]
    assert written["CENTRIFUGO_HMAC_KEY"] == first["CENTRIFUGO_HMAC_KEY"]
    assert written["CENTRIFUGO_PORT"] == port  # the other options are updated
    assert config2["http_server"]["port"] == port
    assert stat.S_IMODE((project / "ws_settings.py").stat().st_mode) == 0o600

    third, config3 = installws(project, centrifugo_binary, "--overwrite")
    assert third["CENTRIFUGO_API_KEY"] != first["CENTRIFUGO_API_KEY"]
    assert third["CENTRIFUGO_HMAC_KEY"] != first["CENTRIFUGO_HMAC_KEY"]
    assert config3["http_api"]["key"] == third["CENTRIFUGO_API_KEY"]


def test_secret_files_are_private_after_every_write(project, centrifugo_binary):
    """Regression: --overwrite into an existing 0644 file left fresh secrets world-readable."""
    config = project / ".centrifugo" / "config.json"
    env_file, settings_file = project / "centrifugo.env", project / "ws_settings.py"
    installws(project, centrifugo_binary, "--port", str(free_port()))
    for path in (config, env_file, settings_file):
        path.touch()
        path.chmod(0o644)
    printed, written = installws(project, centrifugo_binary, "--overwrite", "--write-env",
                                 str(env_file), "--write-settings", str(settings_file))
    for path in (config, env_file, settings_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines()
               if line and not line.startswith("#"))
    assert env["CENTRIFUGO_API_KEY"] == written["http_api"]["key"]
    assert env["CENTRIFUGO_HMAC_KEY"] == written["client"]["token"]["hmac_secret_key"]


def vars_of(path: Path) -> dict:
    import runpy

    return runpy.run_path(str(path))


@pytest.mark.parametrize("options, expect", [
    (["--redis", "redis://127.0.0.1:6379"],
     lambda c: c["engine"] == {"type": "redis", "redis": {"address": ["redis://127.0.0.1:6379"]}}),
    (["--redis", "redis://127.0.0.1:6379", "--redis", "redis://127.0.0.1:6380"],
     lambda c: c["engine"]["redis"]["address"] == ["redis://127.0.0.1:6379",
                                                   "redis://127.0.0.1:6380"]),
    (["--outbox-dsn", "postgresql://app:pw@127.0.0.1:5432/app"],
     lambda c: c["consumers"][0]["type"] == "postgresql"
     and c["consumers"][0]["postgresql"]["dsn"] == "postgresql://app:pw@127.0.0.1:5432/app"
     and c["consumers"][0]["postgresql"]["outbox_table_name"] == "instant_signals_outbox"),
    (["--redis", "redis://127.0.0.1:6379", "--outbox-dsn", "postgresql://127.0.0.1/app",
      "--origin", "https://example.com", "--origin", "http://localhost:3000",
      "--address", "0.0.0.0", "--namespace", "extra", "--ws-url",
      "wss://example.com/connection/websocket"],
     lambda c: c["engine"]["type"] == "redis" and "consumers" in c
     and c["client"]["allowed_origins"] == ["https://example.com", "http://localhost:3000"]
     and c["http_server"]["address"] == "0.0.0.0"
     and [n["name"] for n in c["channel"]["namespaces"]] == ["board", "extra", "room"]),
    (["--history-size", "50", "--history-ttl", "60s"],
     lambda c: {(n["history_size"], n["history_ttl"]) for n in c["channel"]["namespaces"]}
     == {(50, "60s")}),
], ids=["redis", "redis-sharded", "outbox", "everything", "history"])
def test_every_option_combination_passes_checkconfig(project, centrifugo_binary, tmp_path,
                                                      options, expect):
    path = tmp_path / "conf" / "centrifugo.json"
    printed, config = installws(project, centrifugo_binary, "--config", str(path), *options)
    result = checkconfig(centrifugo_binary, path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert expect(config), config
    if "--ws-url" in options:
        assert printed["CENTRIFUGO_WS_URL"] == "wss://example.com/connection/websocket"
        assert printed["CENTRIFUGO_HOST"] == "http://127.0.0.1"  # Django still talks locally


def test_a_broken_config_is_not_overwritten_without_the_option(project, centrifugo_binary):
    path = project / ".centrifugo" / "config.json"
    path.parent.mkdir()
    path.write_text("{not json")
    result = manage(project, "installws", "--binary", str(centrifugo_binary))
    assert result.returncode != 0
    assert "--overwrite" in result.stderr
    assert path.read_text() == "{not json"
    installws(project, centrifugo_binary, "--overwrite")
    assert checkconfig(centrifugo_binary, path).returncode == 0


def test_runws_without_a_config_says_to_run_installws(project):
    result = manage(project, "runws")
    assert result.returncode != 0
    assert "No Centrifugo config at" in result.stderr
    assert str(project / ".centrifugo" / "config.json") in result.stderr
    assert "manage.py installws" in result.stderr


def test_runws_without_centrifugo_says_how_to_install_it(project, centrifugo_binary, tmp_path):
    installws(project, centrifugo_binary, "--port", str(free_port()))
    (project / ".centrifugo" / "config.json.binary").unlink()
    missing = tmp_path / "no-such-centrifugo"
    result = manage(project, "runws", env={"CENTRIFUGO_BINARY": str(missing)})
    assert result.returncode != 0
    assert "Centrifugo is not installed" in result.stderr
    assert "manage.py installws" in result.stderr


def test_runws_runs_centrifugo_in_the_foreground_and_passes_sigterm(project, centrifugo_binary):
    port = free_port()
    installws(project, centrifugo_binary, "--port", str(port))
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    environment.pop("DJANGO_SETTINGS_MODULE", None)
    process = subprocess.Popen([sys.executable, "manage.py", "runws"], cwd=project,
                               env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        server = CentrifugoProcess(centrifugo_binary, project / ".centrifugo" / "config.json")
        server.process = process  # only to wait for its health endpoint
        server.log_path = project / "unused.log"
        server.wait_healthy(20)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
    assert process.returncode == 0, output
    assert "serving websocket" in output  # Centrifugo's own log, on runws' stdout
    assert "signal received: terminated" in output  # the SIGTERM reached Centrifugo


def test_config_only_writes_a_config_for_a_centrifugo_run_elsewhere(project, centrifugo_binary,
                                                                    tmp_path):
    """Production runs the official image or a package: no binary on this machine."""
    result = manage(project, "installws", "--config-only", "--port", "8427",
                    env={"PATH": "/usr/bin:/bin", "INSTANT_SIGNALS_CACHE": str(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr
    config = project / ".centrifugo" / "config.json"
    assert not (project / ".centrifugo" / "config.json.binary").exists()
    assert "centrifugo/centrifugo:v6.9.1" in result.stdout  # how to run it instead
    assert checkconfig(centrifugo_binary, config).returncode == 0  # what that Centrifugo gets


PROJECT_ENV = """\
# The project's own settings: installws must leave them as they are.
DATABASE_URL="postgres://app:p w@127.0.0.1:5432/app"
export SECRET_KEY='s3cr#t=x y'
DEBUG=1

export CENTRIFUGO_HOST="http://old-host"
CENTRIFUGO_PORT=1234
MOTD="first line
CENTRIFUGO_API_KEY=inside-a-quoted-value
last line"
# the end
"""


def shell_env(path: Path, *names: str) -> dict[str, str]:
    """What a shell that sources the file (``set -a; . ./.env``) gets."""
    script = "set -a; . " + str(path) + "; " + "; ".join(
        f'printf "%s\\0" "${name}"' for name in names)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                         env={"PATH": os.environ.get("PATH", "")}).stdout
    return dict(zip(names, out.split("\0")))


def test_write_env_into_an_existing_env_file_keeps_the_project_lines(project, centrifugo_binary):
    env_file = project / ".env"
    env_file.write_text(PROJECT_ENV)
    env_file.chmod(0o644)
    port = free_port()
    result = manage(project, "installws", "--binary", str(centrifugo_binary), "--port", str(port),
                    "--write-env", ".env")
    assert result.returncode == 0, result.stdout + result.stderr
    config = json.loads((project / ".centrifugo" / "config.json").read_text())
    text = env_file.read_text()
    lines = text.splitlines()
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600

    # Every line that is not one of installws's keys is still there, as written, in order.
    own = ("CENTRIFUGO_HOST=", "CENTRIFUGO_PORT=", "CENTRIFUGO_API_KEY=", "CENTRIFUGO_HMAC_KEY=",
           "CENTRIFUGO_WS_URL=")
    theirs = [line for line in PROJECT_ENV.splitlines()
              if not line.removeprefix("export ").startswith(own)]
    assert [line for line in lines if line in theirs] == theirs
    assert "CENTRIFUGO_API_KEY=inside-a-quoted-value" in lines  # part of MOTD's value
    # Its keys are updated where they were (export and quotes kept), the others added.
    assert lines[5] == 'export CENTRIFUGO_HOST="http://127.0.0.1"'
    assert lines[6] == f"CENTRIFUGO_PORT={port}"
    values = shell_env(env_file, "DATABASE_URL", "SECRET_KEY", "DEBUG", "MOTD",
                       "CENTRIFUGO_HOST", "CENTRIFUGO_PORT", "CENTRIFUGO_API_KEY",
                       "CENTRIFUGO_HMAC_KEY", "CENTRIFUGO_WS_URL")
    assert values == {
        "DATABASE_URL": "postgres://app:p w@127.0.0.1:5432/app", "SECRET_KEY": "s3cr#t=x y",
        "DEBUG": "1", "MOTD": "first line\nCENTRIFUGO_API_KEY=inside-a-quoted-value\nlast line",
        "CENTRIFUGO_HOST": "http://127.0.0.1", "CENTRIFUGO_PORT": str(port),
        "CENTRIFUGO_API_KEY": config["http_api"]["key"],
        "CENTRIFUGO_HMAC_KEY": config["client"]["token"]["hmac_secret_key"],
        "CENTRIFUGO_WS_URL": f"ws://127.0.0.1:{port}/connection/websocket"}
    # It says what it did.
    assert ("added CENTRIFUGO_API_KEY, CENTRIFUGO_HMAC_KEY, CENTRIFUGO_WS_URL; "
            "updated CENTRIFUGO_HOST, CENTRIFUGO_PORT") in result.stdout, result.stdout
    assert "kept 9 other lines" in result.stdout, result.stdout

    # A second run with the same options changes nothing, and says so.
    again = manage(project, "installws", "--binary", str(centrifugo_binary), "--port", str(port),
                   "--write-env", ".env")
    assert again.returncode == 0, again.stdout + again.stderr
    assert env_file.read_text() == text
    assert ("kept CENTRIFUGO_HOST, CENTRIFUGO_PORT, CENTRIFUGO_API_KEY, CENTRIFUGO_HMAC_KEY, "
            "CENTRIFUGO_WS_URL (unchanged)") in again.stdout, again.stdout
