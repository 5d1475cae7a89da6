"""Tests of `engine.ingress`."""
