"""Vigil's engine: the pure floor (model, codecs) and the node floor.

The pure floor does no I/O and reads no clock: `engine.model`, `engine.errors`,
`engine.hl7`, `engine.fhir`, `engine.mllp`, `engine.framing`, `engine.decode`,
`engine.feedgen`. `lanes/` and `actors/` may import those and nothing else of
`engine` (a test checks it). This module imports nothing, so importing a pure
module never drags in the node floor.
"""
