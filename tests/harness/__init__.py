"""The tests' shared harnesses: a real node process, NATS and PostgreSQL servers, message builders, faults."""
