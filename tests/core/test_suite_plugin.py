"""The conformance suite's pytest plugin as seen from other people's test sessions, and plugin
discovery that stays light; each check runs pytest or Python in a subprocess, outside this
repository, as a project that merely has the distributions installed would."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

STORAGE_CLIENTS = ("sqlalchemy", "psycopg", "psycopg_pool", "redis", "aiosqlite")


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def test_the_plugin_adds_no_generic_fixture_names(tmp_path: Path) -> None:
    """An unrelated project's ``clock`` or ``backend`` argument is not silently filled by Bananas."""
    (tmp_path / "test_theirs.py").write_text(
        textwrap.dedent("""
            def test_wants_a_clock(clock):
                pass

            def test_wants_a_backend(backend):
                pass

            def test_the_bananas_plugin_is_loaded(bananas_clock):
                assert type(bananas_clock).__name__ == "ManualClock"
        """)
    )
    result = run(["-m", "pytest", "-p", "no:cacheprovider", "test_theirs.py"], tmp_path)
    assert result.returncode == 1, result.stdout
    assert "fixture 'clock' not found" in result.stdout
    assert "fixture 'backend' not found" in result.stdout
    assert "1 passed, 2 errors" in result.stdout


def test_a_skip_names_the_test_and_the_capability_not_the_suites_line(tmp_path: Path) -> None:
    """example:// does not declare cron: its cron tests are skipped, reported at the test."""
    result = run(
        ["-m", "pytest", "-p", "no:cacheprovider", "-rs", "--pyargs", "bananas.testing.run",
         "--bananas-url", "example://skips", "-k", "test_cron_fire_once_per_tick"],
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    skipped = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 1, result.stdout
    assert skipped[0] == (
        "SKIPPED [1] TestBackendConformance::test_cron_fire_once_per_tick[asyncio]: "
        "needs the 'cron' capability, which the 'example' backend does not declare"
    )


def test_a_missing_client_library_is_one_error_not_one_per_test(tmp_path: Path) -> None:
    (tmp_path / "needy_plugin.py").write_text(
        textwrap.dedent("""
            from bananas.plugins import BackendSpec, hookimpl

            def _factory(url, options):
                import bananas_surely_missing_client  # noqa: F401

            @hookimpl
            def bananas_backends():
                return [BackendSpec(name="needy", schemes=("needy",), factory=_factory)]
        """)
    )
    info = tmp_path / "bananas_needy-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bananas-needy\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[bananas]\nneedy = needy_plugin\n")
    result = run(
        ["-m", "pytest", "-p", "no:cacheprovider", "--pyargs", "bananas.testing.run", "--bananas-url", "needy://x"],
        tmp_path,
    )
    assert result.returncode == 4, result.stdout  # pytest's usage error
    assert result.stdout.count("bananas_surely_missing_client") == 1, result.stdout
    assert "pip install bananas-needy" in result.stdout


DISCOVERY = """
import asyncio, json, sys
import bananas
from bananas.cli import main
from bananas.plugins import backend_specs

names = sorted(spec.name for spec in backend_specs())
main(["backends"])


async def use_memory():
    async with bananas.connect("memory://") as backend:
        await backend.queue.ping()

asyncio.run(use_memory())
print(json.dumps({"backends": names, "loaded": sorted(m for m in %r if m in sys.modules)}))
"""


def test_discovery_and_memory_import_no_storage_client(tmp_path: Path) -> None:
    """Listing backends (``bananas backends``, the plugin manager) and using memory:// leave
    SQLAlchemy, psycopg and redis unimported: plugin modules import them in their factories."""
    import json

    result = run(["-c", DISCOVERY % (STORAGE_CLIENTS,)], tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert {"memory", "redis", "postgresql", "sqlite"} <= set(report["backends"])  # else this proves nothing
    assert report["loaded"] == []
