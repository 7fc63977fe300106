"""The web dashboard: queues, jobs, dead letters, workers and schedules in a browser.

Installed with the ``dashboard`` extra (``pip install 'bananas[dashboard]'``); the rest of
Bananas never imports it. Serve it with ``bananas dashboard --url URL``, or mount
:func:`create_app` in an ASGI application of your own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bananas.dashboard.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Lazy: `bananas dashboard --help` and the command's checks run without the web libraries.
    if name == "create_app":
        from bananas.dashboard.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
