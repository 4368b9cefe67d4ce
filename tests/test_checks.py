"""Missing or malformed settings are reported by `manage.py check`, not by a crash at first use."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from instant_signals.checks import check_settings


def ids(settings_errors):
    return sorted(e.id for e in settings_errors)


def test_good_settings_pass():
    assert check_settings() == []
    call_command("check")


@pytest.mark.parametrize("name, value, expected", [
    ("CENTRIFUGO_API_KEY", None, "instant_signals.E001"),
    ("CENTRIFUGO_API_KEY", 123, "instant_signals.E001"),
    ("CENTRIFUGO_HMAC_KEY", "", "instant_signals.E002"),
    ("CENTRIFUGO_HMAC_KEY", "short", "instant_signals.W001"),
    ("CENTRIFUGO_PORT", "8000", "instant_signals.E003"),
    ("CENTRIFUGO_PORT", 70000, "instant_signals.E003"),
    ("CENTRIFUGO_HOST", "localhost", "instant_signals.E004"),
    ("CENTRIFUGO_API_URL", "ftp://x/api", "instant_signals.E005"),
    ("CENTRIFUGO_WS_URL", "nope", "instant_signals.E006"),
    ("INSTANT_SIGNALS", ["x"], "instant_signals.E007"),
    ("INSTANT_SIGNALS", {"TYPO": 1}, "instant_signals.E007"),
    ("INSTANT_SIGNALS", {"DELIVERY": "carrier-pigeon"}, "instant_signals.E008"),
    ("INSTANT_SIGNALS", {"TIMEOUT": -1}, "instant_signals.E009"),
    ("INSTANT_SIGNALS", {"TIMEOUT": (1, "x")}, "instant_signals.E009"),
    ("INSTANT_SIGNALS", {"BATCH_SIZE": 0}, "instant_signals.E010"),
    ("INSTANT_SIGNALS", {"CONNECTION_TOKEN_LIFETIME": "1h"}, "instant_signals.E010"),
    ("INSTANT_SIGNALS", {"MODELS": ["auth.User"]}, "instant_signals.E011"),
])
def test_each_bad_setting_is_reported(settings, name, value, expected):
    setattr(settings, name, value)
    assert expected in ids(check_settings())


def test_manage_py_check_fails_on_missing_key(settings):
    del settings.CENTRIFUGO_API_KEY
    with pytest.raises(SystemCheckError, match="CENTRIFUGO_API_KEY"):
        call_command("check")


def test_settings_are_read_when_used(settings):
    from instant_signals import conf

    settings.CENTRIFUGO_HOST, settings.CENTRIFUGO_PORT = "http://rt.local", 9000
    assert conf.api_url() == "http://rt.local:9000/api"
    settings.CENTRIFUGO_API_URL = "http://other/api/"
    assert conf.api_url() == "http://other/api"
