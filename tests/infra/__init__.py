"""Tests of `engine.infra`."""
