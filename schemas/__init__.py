"""Headwater schemas."""
