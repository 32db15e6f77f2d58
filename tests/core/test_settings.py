"""Settings read MMSEARCH_* variables and fail fast naming the variable."""
from __future__ import annotations

import os

import pytest

from mmsearch.core.settings import SettingsError, load_settings
from mmsearch.services.runtime.settings import GrpcSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("MMSEARCH_"):
            monkeypatch.delenv(key)


def test_defaults_and_environment(monkeypatch):
    assert load_settings(GrpcSettings).port == 50051
    monkeypatch.setenv("MMSEARCH_PORT", "0")
    monkeypatch.setenv("mmsearch_log_level", "debug")
    monkeypatch.setenv("MMSEARCH_LOG_JSON", "false")
    settings = load_settings(GrpcSettings)
    assert (settings.port, settings.log_level, settings.log_json) == (0, "debug", False)


def test_overrides_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("MMSEARCH_PORT", "1234")
    assert load_settings(GrpcSettings, port=4321).port == 4321


@pytest.mark.parametrize("variable, value, expected", [
    ("MMSEARCH_PORT", "http", "MMSEARCH_PORT (got 'http')"),
    ("MMSEARCH_PORT", "70000", "MMSEARCH_PORT (got '70000')"),
    ("MMSEARCH_METRICS_PORT", "-1", "MMSEARCH_METRICS_PORT"),
    ("MMSEARCH_LOG_LEVEL", "loud", "MMSEARCH_LOG_LEVEL"),
    ("MMSEARCH_GRACE_SECONDS", "soon", "MMSEARCH_GRACE_SECONDS"),
    ("MMSEARCH_LOG_JSON", "maybe", "MMSEARCH_LOG_JSON"),
])
def test_bad_value_names_the_variable(monkeypatch, variable, value, expected):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings(GrpcSettings)
    assert str(info.value).startswith("invalid environment variable") and expected in str(info.value)
    assert isinstance(info.value, SystemExit), "a bad setting ends the process with the message"
