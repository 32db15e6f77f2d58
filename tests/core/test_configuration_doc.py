"""docs/configuration.md is generated from the settings classes and the job options, and kept current."""
from __future__ import annotations

import re

from mmsearch.core.settings import variables
from mmsearch.dev import configuration_doc


def test_the_reference_is_current():
    text = configuration_doc.OUTPUT.read_text() if configuration_doc.OUTPUT.exists() else ""
    assert text == configuration_doc.render(), (
        f"{configuration_doc.OUTPUT} is stale: run `{configuration_doc.COMMAND}` (or `make docs`) and commit it")


def test_every_variable_of_every_process_is_documented():
    documented = set(re.findall(r"`(MMSEARCH_[A-Z0-9_]+)`", configuration_doc.render()))
    for _, _, classes in configuration_doc.PROCESSES:
        for cls in classes:
            missing = {var.name for var in variables(cls)} - documented
            assert not missing, f"{cls.__name__}: {sorted(missing)} not in the reference"


def test_no_setting_describes_itself_with_a_measured_figure():
    """Figures live in bench/ and docs; a description says what a setting does."""
    for _, _, classes in configuration_doc.PROCESSES:
        for cls in classes:
            for var in variables(cls):
                text = var.field.description or ""
                assert not re.search(r"\d+(\.\d+)? ?(ms\b|%)|\bQPS\b|\bmeasured on \d", text), f"{var.name}: {text}"
