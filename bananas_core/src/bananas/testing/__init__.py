"""The Bananas conformance suite (placeholder while it is being written)."""
