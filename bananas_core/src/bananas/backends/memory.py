"""Placeholder: the in-memory backend is being written."""
