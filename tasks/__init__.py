"""Headwater tasks."""
