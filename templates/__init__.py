"""Jinja templates shipped with envpipe (SPEC §8); loaded as package data."""
