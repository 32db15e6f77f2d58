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


def test_a_renamed_variable_is_read_under_its_old_name_converted_with_a_warning(monkeypatch, caplog):
    from mmsearch.core import settings as settings_module
    from mmsearch.services.serving.config.settings import ServingSettings

    monkeypatch.setattr(settings_module, "_warned", set())  # each warning is logged once per process
    monkeypatch.setenv("MMSEARCH_DEFAULT_DEADLINE_MS", "1500")
    monkeypatch.setenv("MMSEARCH_IMPRESSION_FLUSH_MS", "250")
    with caplog.at_level("WARNING", logger="mmsearch.settings"):
        settings = load_settings(ServingSettings)
    assert (settings.timing.default_deadline_seconds, settings.events.flush_seconds) == (1.5, 0.25)
    monkeypatch.setenv("MMSEARCH_DEFAULT_DEADLINE_SECONDS", "3")  # the new name wins
    assert load_settings(ServingSettings).timing.default_deadline_seconds == 3.0
    assert "MMSEARCH_DEFAULT_DEADLINE_MS is deprecated: set MMSEARCH_DEFAULT_DEADLINE_SECONDS" in caplog.text


def test_a_bad_value_under_an_old_name_names_it(monkeypatch):
    from mmsearch.services.serving.config.settings import ServingSettings

    monkeypatch.setenv("MMSEARCH_ENCODER_TIMEOUT_MS", "soon")
    with pytest.raises(SettingsError, match="MMSEARCH_ENCODER_TIMEOUT_MS.*MMSEARCH_ENCODER_TIMEOUT_SECONDS"):
        load_settings(ServingSettings)


def test_a_grouped_variable_names_itself_when_bad(monkeypatch):
    from mmsearch.services.serving.config.settings import ServingSettings

    monkeypatch.setenv("MMSEARCH_ONNX_INTRA_OP_THREADS", "many")
    with pytest.raises(SettingsError, match="MMSEARCH_ONNX_INTRA_OP_THREADS \\(got 'many'\\)"):
        load_settings(ServingSettings)
    monkeypatch.setenv("MMSEARCH_ONNX_INTRA_OP_THREADS", "2")
    assert load_settings(ServingSettings, onnx={"single_query_threads": 1}).onnx.intra_op_threads == 2
