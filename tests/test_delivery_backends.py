"""Delivery modes have one home: ``delivery.BACKENDS``; checks and docs read the backends."""

from pathlib import Path

from django.core.checks import run_checks

from instant_signals import delivery

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_each_backend_declares_its_name_durability_and_one_method():
    backends = delivery.backends()
    assert list(backends) == list(delivery.modes()) == ["on_commit", "outbox"]
    for name, backend in backends.items():
        assert backend.name == name and isinstance(backend.durable, bool)
        assert callable(backend.record_many) and not hasattr(backend, "record")
    assert [b.durable for b in backends.values()] == [False, True]


def test_is_durable_reads_the_configured_backend(settings):
    for mode, durable in (("on_commit", False), ("outbox", True)):
        settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "DELIVERY": mode}
        assert delivery.is_durable() is durable


def test_the_check_and_the_settings_page_list_every_mode(settings):
    settings.INSTANT_SIGNALS = {**settings.INSTANT_SIGNALS, "DELIVERY": "carrier-pigeon"}
    e008 = [m for m in run_checks() if m.id == "instant_signals.E008"]
    assert len(e008) == 1 and all(repr(mode) in e008[0].msg for mode in delivery.modes())
    text = (DOCS / "reference" / "settings.md").read_text()
    assert all(f'`"{mode}"`' in text for mode in delivery.modes())
