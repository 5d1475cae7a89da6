"""Tests of `engine.projections`."""
