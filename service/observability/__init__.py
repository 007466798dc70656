"""Cross-cutting observability: JSON logs and OpenTelemetry tracing (no I/O of its own)."""
