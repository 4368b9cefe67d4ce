"""Missing or malformed settings are reported by `manage.py check`, not by a crash at first use."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from instant_signals import broadcast_registry
from instant_signals.checks import check_declarations, check_settings
from tests.testapp.models import Plain


def ids(settings_errors):
    return sorted(e.id for e in settings_errors)


def test_good_settings_pass():
    assert check_settings() == []
    call_command("check")


@pytest.mark.parametrize("name, value, expected", [
    ("CENTRIFUGO_API_KEY", None, "instant_signals.W002"),
    ("CENTRIFUGO_API_KEY", 123, "instant_signals.W002"),
    ("CENTRIFUGO_HMAC_KEY", "", "instant_signals.W003"),
    ("CENTRIFUGO_HMAC_KEY", "short", "instant_signals.W001"),
    ("CENTRIFUGO_PORT", "8000", "instant_signals.E003"),
    ("CENTRIFUGO_PORT", 70000, "instant_signals.E003"),
    ("CENTRIFUGO_HOST", "localhost", "instant_signals.E004"),
    ("CENTRIFUGO_API_URL", "ftp://x/api", "instant_signals.E005"),
    ("CENTRIFUGO_WS_URL", "nope", "instant_signals.E006"),
    ("INSTANT_SIGNALS", ["x"], "instant_signals.E007"),
    ("INSTANT_SIGNALS", {"TYPO": 1}, "instant_signals.E012"),
    ("INSTANT_SIGNALS", {"DELIVERY": "carrier-pigeon"}, "instant_signals.E008"),
    ("INSTANT_SIGNALS", {"TIMEOUT": -1}, "instant_signals.E009"),
    ("INSTANT_SIGNALS", {"TIMEOUT": (1, "x")}, "instant_signals.E009"),
    ("INSTANT_SIGNALS", {"BATCH_SIZE": 0}, "instant_signals.E010"),
    ("INSTANT_SIGNALS", {"CONNECTION_TOKEN_LIFETIME": "1h"}, "instant_signals.E010"),
    ("INSTANT_SIGNALS", {"MODELS": ["auth.User"]}, "instant_signals.E011"),
    ("INSTANT_SIGNALS", {"SUBSCRIBE_MAX_CHANNELS": 0}, "instant_signals.E010"),
])
def test_each_bad_setting_is_reported(settings, name, value, expected):
    setattr(settings, name, value)
    assert expected in ids(check_settings())


@pytest.mark.django_db
def test_missing_keys_warn_but_block_nothing_except_deploy(settings, capsys):
    """A project without Centrifugo secrets (a CI, a first migrate) still runs its commands;
    `check --deploy` refuses."""
    del settings.CENTRIFUGO_API_KEY
    del settings.CENTRIFUGO_HMAC_KEY
    call_command("check")  # warnings only: migrate, runserver and test run
    assert "instant_signals.W002" in capsys.readouterr().err
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)  # checks ran: no block
    with pytest.raises(SystemCheckError, match="instant_signals.E001"):
        call_command("check", "--deploy", "--tag", "security")


def test_missing_api_key_is_a_clear_error_at_first_publish(settings):
    from django.core.exceptions import ImproperlyConfigured

    from instant_signals import publish

    del settings.CENTRIFUGO_API_KEY
    with pytest.raises(ImproperlyConfigured, match="run `python manage.py installws`"):
        publish("public", "hello")


def test_dropped_secret_fields_are_listed():
    broadcast_registry.register(Plain, channels=["plain"], fields="__all__")
    try:
        warnings = [m for m in check_declarations() if m.id == "instant_signals.W010"]
    finally:
        broadcast_registry.unregister(Plain)
    assert [w.msg for w in warnings if "testapp.plain" in w.msg] == [
        "@broadcast on testapp.plain leaves out secret-looking fields: secret."]
    assert any("testapp.item" in w.msg and "api_key, password, reset_token" in w.msg
               for w in warnings)


def test_config_drift_is_reported(settings, tmp_path):
    from instant_signals.centrifugo_config import generate_config, write_config

    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS,
                                "CENTRIFUGO_CONFIG": str(tmp_path / "config.json")}
    assert [m for m in check_declarations() if m.id.startswith("instant_signals.W01")
            and m.id != "instant_signals.W010"] == []  # no file: nothing to compare
    write_config(tmp_path / "config.json",
                 generate_config(namespaces={**broadcast_registry.namespaces()},
                                 api_key=settings.CENTRIFUGO_API_KEY,
                                 hmac_key=settings.CENTRIFUGO_HMAC_KEY))
    assert [m.id for m in check_declarations() if m.id != "instant_signals.W010"] == []
    broadcast_registry.register(Plain, channels=["$plainspace:{pk}"], fields=["name"],
                                authorize=lambda user, pk: True)
    try:
        drift = [m for m in check_declarations() if m.id == "instant_signals.W011"]
    finally:
        broadcast_registry.unregister(Plain)
    assert len(drift) == 1 and "'plainspace'" in drift[0].msg
    assert "python manage.py installws" in drift[0].hint


def test_settings_are_read_when_used(settings):
    from instant_signals import conf

    settings.CENTRIFUGO_HOST, settings.CENTRIFUGO_PORT = "http://rt.local", 9000
    assert conf.api_url() == "http://rt.local:9000/api"
    settings.CENTRIFUGO_API_URL = "http://other/api/"
    assert conf.api_url() == "http://other/api"


def test_keys_that_are_not_the_configs_are_reported_without_showing_them(settings, tmp_path):
    """A stale .env: Django's keys differ from the ones installws wrote for Centrifugo."""
    from instant_signals.centrifugo_config import generate_config, write_config

    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS,
                                "CENTRIFUGO_CONFIG": str(tmp_path / "config.json")}
    config = generate_config(namespaces={**broadcast_registry.namespaces()})  # fresh keys
    write_config(tmp_path / "config.json", config)
    found = {m.id: m for m in check_declarations()}
    assert "401" in found["instant_signals.W015"].msg
    assert "invalid token" in found["instant_signals.W016"].msg
    assert "installws --write-env" in found["instant_signals.W015"].hint
    shown = " ".join(m.msg + (m.hint or "") for m in found.values())
    for secret in (config["http_api"]["key"], config["client"]["token"]["hmac_secret_key"],
                   settings.CENTRIFUGO_API_KEY, settings.CENTRIFUGO_HMAC_KEY):
        assert secret not in shown
    settings.CENTRIFUGO_API_KEY = config["http_api"]["key"]
    settings.CENTRIFUGO_HMAC_KEY = config["client"]["token"]["hmac_secret_key"]
    assert {"instant_signals.W015", "instant_signals.W016"} & {m.id for m in check_declarations()} == set()


def test_site_origins_missing_from_the_config_are_reported(settings, tmp_path):
    from instant_signals.centrifugo_config import generate_config, write_config

    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS,
                                "CENTRIFUGO_CONFIG": str(tmp_path / "config.json")}
    write_config(tmp_path / "config.json", generate_config(
        namespaces={**broadcast_registry.namespaces()}, api_key=settings.CENTRIFUGO_API_KEY,
        hmac_key=settings.CENTRIFUGO_HMAC_KEY, allowed_origins=["https://app.example"]))
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example", "https://admin.example/",
                                     "https://*.example"]
    origins = [m for m in check_declarations() if m.id == "instant_signals.W017"]
    assert len(origins) == 1 and "https://admin.example" in origins[0].msg
    assert "app.example," not in origins[0].msg and "*" not in origins[0].msg
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example"]
    assert [m for m in check_declarations() if m.id == "instant_signals.W017"] == []


def test_urls_not_included_are_reported(settings):
    from instant_signals.checks import check_urls

    assert check_urls() == []
    settings.ROOT_URLCONF = __name__
    found = check_urls()
    assert [m.id for m in found] == ["instant_signals.W014"]
    assert 'include("instant_signals.urls")' in found[0].hint


urlpatterns: list = []  # this module as a URLconf without instant_signals' URLs
