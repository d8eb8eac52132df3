"""Weaviate: installer, embedded server, connections."""
