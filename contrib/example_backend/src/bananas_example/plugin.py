"""The plugin module named by the ``bananas`` entry point: it only describes the backend."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from bananas import Backend, BackendOptions, BackendSpec, Capability, hookimpl

CAPABILITIES = frozenset(
    {Capability.DEAD_LETTER_ADMIN, Capability.PUSH_WAKEUP, Capability.RESULT_PUSH, Capability.RESULT_TTL}
)
"""What the backend offers, declared once, in the spec: bananas.connect gives it to the Backend."""


def connect(url: str, options: BackendOptions) -> Backend:
    """Build the backend for ``example://NAME`` (the store module is imported only here)."""
    from bananas_example.store import ExampleQueue, ExampleResults, ExampleWorkers, store_named

    name = urlsplit(url).netloc
    store = store_named(f"{name}/{options.extra.get('namespace', '')}")
    return Backend(
        name="example",
        url=url,
        queue=ExampleQueue(store, options),
        results=ExampleResults(store, options),
        workers=ExampleWorkers(store, options),
        options=options,
    )


@hookimpl
def bananas_backends() -> Iterable[BackendSpec]:
    """One backend, serving ``example://``."""
    return [
        BackendSpec(
            name="example",
            schemes=("example",),
            factory=connect,
            capabilities=CAPABILITIES,
            options=("namespace",),  # the only option connect() reads from options.extra
        )
    ]
