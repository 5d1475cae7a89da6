"""The ways a message comes in: the MLLP listener and its answers, NATS subjects, the drop folder, parse workers.

A source is handed an `ingest` callable by the node and never imports the node.
"""
