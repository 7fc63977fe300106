"""An example Bananas storage backend: ``bananas.connect("example://NAME")``."""

from bananas_example.store import ExampleStore

__all__ = ["ExampleStore"]
