"""Settings come from SHOPCAST_* variables; a bad one names itself."""

import pytest

from streams.settings import SettingsError, load_settings


def test_defaults(monkeypatch):
    monkeypatch.delenv("SHOPCAST_BOOTSTRAP_SERVERS", raising=False)
    settings = load_settings()
    assert settings.events_topic == "shop.events" and settings.window_length is None
    assert settings.window_ttl_ms == 30 * 24 * 3600 * 1000


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("SHOPCAST_BATCH_SIZE", "64")
    monkeypatch.setenv("SHOPCAST_STORE", "rocksdb")
    settings = load_settings()
    assert settings.batch_size == 64 and settings.store == "rocksdb"


def test_settings_are_frozen():
    settings = load_settings()
    with pytest.raises(Exception):
        settings.batch_size = 3


@pytest.mark.parametrize("name, value", [
    ("SHOPCAST_BATCH_SIZE", "lots"),
    ("SHOPCAST_TOP_K", "0"),
    ("SHOPCAST_STORE", "redis"),
    ("SHOPCAST_SECURITY_PROTOCOL", "TLS"),
    ("SHOPCAST_METRICS_PORT", "70000"),
])
def test_a_bad_value_names_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_sasl_without_credentials_is_refused(monkeypatch):
    monkeypatch.setenv("SHOPCAST_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(SettingsError, match="SHOPCAST_SASL_USERNAME"):
        load_settings()
