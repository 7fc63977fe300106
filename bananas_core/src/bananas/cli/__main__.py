"""``python -m bananas.cli``: the same as the ``bananas`` command."""

from bananas.cli import main

raise SystemExit(main())
