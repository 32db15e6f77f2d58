"""Tests of mmsearch.reports: the A/B experiment report and its statistics."""
