"""Local infrastructure: the embedded Weaviate server, Ray start-up, telemetry defaults."""
