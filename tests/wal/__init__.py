"""Tests of `engine.wal`."""
