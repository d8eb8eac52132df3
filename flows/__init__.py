"""Headwater flows."""
