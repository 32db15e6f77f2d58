"""Tests of the preprocess service."""
