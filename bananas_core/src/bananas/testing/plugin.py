"""pytest plugin of the conformance suite (placeholder while it is being written)."""
