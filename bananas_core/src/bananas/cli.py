"""The ``bananas`` command (placeholder while it is being written)."""


def main() -> int:
    """Entry point of the ``bananas`` command."""
    print("bananas: the command line is not written yet")
    return 1
