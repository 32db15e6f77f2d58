"""Tests of mmsearch.core (codec, settings, model repository, limits)."""
