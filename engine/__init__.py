"""Vigil's engine, one folder per floor (DESIGN.md's layers), each importing only the floors below it.

- `engine.core`: the pure floor. The message model, the error tree, the HL7 v2
  and FHIR R4 codecs, MLLP framing, cutting an input into messages, decoding
  to envelopes. No I/O, no clock, no event loop: `lanes/` and `actors/` may
  import it and nothing else of `engine` (tests/test_layers.py checks it).
- `engine.infra`: the node floor's plumbing, shared by every part: the
  configuration, logging, telemetry, TLS, the admin socket's protocol.
- `engine.wal`, `engine.cluster`, `engine.projections`, `engine.auth`: the node
  floor's stores and services: the log, the cluster, the read side, sessions.
- `engine.ingress`: the sources a message comes in by (MLLP, NATS, the drop
  folder) and the parse workers.
- `engine.node`: the node's parts and the one module that wires them.
- `engine.cli`: the `vigil` command, one module per command group.

This module imports nothing, so importing a pure module never drags in the node floor.
"""
