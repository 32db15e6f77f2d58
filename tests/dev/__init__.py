"""Tests of mmsearch.dev: the demo plan, the demo end to end, the embedded servers."""
