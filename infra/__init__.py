"""Infrastructure: the local service stack without Docker, its configuration and readiness probes."""
