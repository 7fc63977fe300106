"""Backends that ship inside the core (each registered through the ``bananas`` entry point group)."""
