"""The Bananas conformance suite: one set of contract tests every storage backend must pass.

Install with ``pip install bananas-core[testing]``; the pytest plugin
(:mod:`bananas.testing.plugin`) is loaded automatically through the ``pytest11`` entry point.

Run it with no code against a URL::

    pytest --pyargs bananas.testing.run --bananas-url mine://localhost/0

or subclass the base class in your own tests (override one attribute or one fixture)::

    from bananas.testing.suite import BackendConformance

    class TestMine(BackendConformance):
        bananas_url = "mine://localhost/0"          # a fixed URL, or:

        @pytest.fixture
        def bananas_url(self, my_server_url):      # a URL from a fixture, or:
            return my_server_url

        @pytest.fixture
        def bananas_backend_factory(self):         # full control
            return lambda clock, **options: build_mine(clock=clock, **options)

The factory must return a FRESH, ISOLATED backend on each call (the default one connects
with ``namespace="t" + uuid``), read every time from the given clock, and honour
:class:`~bananas.backend.BackendOptions` keyword options (the TTL tests pass them).

Fixtures, all named ``bananas_*`` so that none collides with a project's own: ``bananas_url``,
``bananas_backend_factory``, ``bananas_clock`` (a ManualClock), ``bananas_backend``
(``factory(bananas_clock)``, closed after the test) and ``bananas_overwrite_record``. Markers:
``bananas_capability(Capability.X)`` skips a test, with a reason, unless the backend declares
X; ``bananas_realtime`` marks the few tests that sleep in real time (TTL expiry). Core
semantics carry no capability marker and are never skipped. Modules:
:mod:`~bananas.testing.suite` (the tests), :mod:`~bananas.testing.stateful` (the hypothesis
state machine against a model), :mod:`~bananas.testing.strategies` (hypothesis strategies).
"""
