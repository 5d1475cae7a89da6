"""The node floor's plumbing, shared by its parts: configuration, logging, telemetry, TLS, the admin socket."""
