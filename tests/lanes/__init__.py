"""Tests of `lanes`."""
