"""Tests of `engine.auth`."""
