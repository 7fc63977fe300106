"""Redis backend for Bananas: ``bananas.connect("redis://...")``.

Importing this package is cheap; redis is imported when a backend is built.
"""

__version__ = "0.2.0"
