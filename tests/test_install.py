"""Installing Bananas as the README says: ``scripts/wheels`` builds every distribution into one
folder, then ``pip install --find-links dist "bananas[EXTRA]"`` into a fresh virtual
environment gives ``import bananas`` and the backends that extra promises.

Versions: every distribution carries the same version and the meta distribution and the
backends pin ``bananas-core`` (and each other) to exactly it. The numbers are written in each
``pyproject.toml`` (and in ``__version__``) and checked here to agree, rather than generated
at build time: a pin such as ``bananas-core==X`` in ``dependencies`` cannot be filled in by
hatchling's version sources without a build plugin, and reading a file outside a
distribution's folder would break building that distribution on its own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# folder -> distribution name; these four are built and pinned together
DISTRIBUTIONS = {
    ".": "bananas",
    "bananas_core": "bananas-core",
    "bananas_redis": "bananas-redis",
    "bananas_sql": "bananas-sql",
}
VERSION_FILES = ["bananas_core/src/bananas/__init__.py", "bananas_redis/src/bananas_redis/__init__.py"]
OURS = re.compile(r"^(bananas(?:-core|-redis|-sql)?)(\[[^\]]*\])?\s*(.*)$")
LICENSE_HEAD = "MIT License\n\nCopyright (c) 2026 The Bananas authors\n"


def project(folder: str) -> dict[str, object]:
    data = tomllib.loads((ROOT / folder / "pyproject.toml").read_text())
    section: dict[str, object] = data["project"]
    return section


def our_requirements(folder: str) -> list[tuple[str, str]]:
    """(requirement, version specifier) of every requirement naming one of our distributions."""
    proj = project(folder)
    reqs = list(proj.get("dependencies", []))  # type: ignore[call-overload]
    for extra in proj.get("optional-dependencies", {}).values():  # type: ignore[attr-defined]
        reqs += extra
    found = []
    for req in reqs:
        match = OURS.match(req)
        if match:
            found.append((req, match.group(3).strip()))
    return found


def version() -> str:
    value = project(".")["version"]
    assert isinstance(value, str)
    return value


def test_every_distribution_has_the_same_version_and_pins_it_exactly() -> None:
    expected = version()
    for folder, name in DISTRIBUTIONS.items():
        proj = project(folder)
        assert proj["name"] == name
        assert proj["version"] == expected, f"{folder}/pyproject.toml has {proj['version']}, the root {expected}"
        for req, spec in our_requirements(folder):
            assert spec == f"=={expected}", f"{folder}/pyproject.toml: {req!r} must pin =={expected}"
    assert len(our_requirements(".")) >= 5  # core + the four extras: the check above saw them
    for path in VERSION_FILES:
        found = re.findall(r'^__version__ = "([^"]+)"$', (ROOT / path).read_text(), flags=re.M)
        assert found == [expected], f"{path}: __version__ {found} is not {expected}"


def test_every_distribution_is_mit_licensed_with_the_license_file_beside_it() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith(LICENSE_HEAD)
    for folder in [*DISTRIBUTIONS, "contrib/example_backend"]:
        assert (ROOT / folder / "LICENSE").read_text() == text, f"{folder}/LICENSE differs from the root's"
        assert project(folder)["license"] == "MIT"


def test_readmes_of_the_distributions_work_on_an_index_page() -> None:
    """A package index shows a distribution's README with no repository around it: no
    relative links (they would break there) and no reference outside the repository."""
    for folder in ("bananas_core", "bananas_redis", "bananas_sql"):
        text = (ROOT / folder / "README.md").read_text()
        links = re.findall(r"\]\((?!https?://|#)([^)]*)\)", text)
        assert links == [], f"{folder}/README.md has relative links {links}"
        assert "../shared" not in text  # split, so that the git grep for such links finds none


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "wheels"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.mark.slow
def test_scripts_wheels_builds_every_distribution_with_its_license(wheels: Path) -> None:
    expected = version()
    built = sorted(p.name for p in wheels.glob("*.whl"))
    assert built == sorted(f"{name.replace('-', '_')}-{expected}-py3-none-any.whl" for name in DISTRIBUTIONS.values())
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            licenses = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
            assert len(licenses) == 1, f"{wheel.name}: {names}"
            assert zf.read(licenses[0]).decode().startswith(LICENSE_HEAD)
            metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
            assert "License-Expression: MIT" in metadata, wheel.name
            assert f"Version: {expected}\n" in metadata


# extra -> (backends `bananas backends` must list, modules the extra must make importable).
# bananas-sql declares PostgreSQL whether or not its driver (the `postgres` extra) is installed.
EXTRAS = {
    "": ({"memory"}, []),
    "sqlite": ({"memory", "sqlite", "postgresql"}, ["sqlalchemy", "aiosqlite"]),
    "postgres": ({"memory", "sqlite", "postgresql"}, ["psycopg"]),
    "redis": ({"memory", "redis"}, ["redis"]),
    "all": ({"memory", "redis", "sqlite", "postgresql"}, ["redis", "hiredis", "psycopg", "aiosqlite"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("extra", list(EXTRAS), ids=lambda e: e or "core")
def test_pip_install_from_the_wheels_into_a_fresh_venv(wheels: Path, tmp_path: Path, extra: str) -> None:
    backends, modules = EXTRAS[extra]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    requirement = f"bananas[{extra}]" if extra else "bananas"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANANAS_", "PYTHON", "VIRTUAL_ENV"))}
    # this test run's pip, installing into the new venv: what `pip install` in that venv does
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--disable-pip-version-check",
         "--find-links", str(wheels), requirement],
        capture_output=True, text=True, timeout=240, check=False, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr

    probe = (
        "import importlib, importlib.metadata as md, json, bananas\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps({'file': bananas.__file__, 'version': bananas.__version__,"
        " 'dist': md.version('bananas')}))\n"
    )
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert Path(info["file"]).is_relative_to(venv), info  # the wheel, not the checkout
    assert info["version"] == info["dist"] == version()  # ours, not the other project named bananas

    listed = subprocess.run(
        [str(venv / "bin" / "bananas"), "backends", "--json"],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert {b["name"] for b in json.loads(listed.stdout)} == backends


@pytest.mark.slow
def test_the_suite_runs_from_the_wheels_alone(wheels: Path, tmp_path: Path) -> None:
    """What a backend author gets from PyPI: the conformance suite by URL with no code, a
    clear usage error without a URL, and no fixtures named ``clock``/``backend`` pushed into
    another project's tests."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANANAS_", "PYTHON", "VIRTUAL_ENV"))}
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--disable-pip-version-check",
         "--find-links", str(wheels), "bananas[sqlite]", f"bananas-core[testing]=={version()}"],
        capture_output=True, text=True, timeout=300, check=False, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    project = tmp_path / "project"
    project.mkdir()

    def pytest_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
            capture_output=True, text=True, timeout=600, check=False, env=env, cwd=project,
        )  # fmt: skip

    db = tmp_path / "suite.db"
    # The tests of the newest tables: the whole suite runs by URL in tests/conformance.
    run = pytest_run("--pyargs", "bananas.testing.run", "--bananas-url", f"sqlite:///{db}", "-k", "groups or cancel")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert re.search(r"\d+ passed", run.stdout), run.stdout[-2000:]
    assert " failed" not in run.stdout and " error" not in run.stdout, run.stdout[-2000:]

    no_url = pytest_run("--pyargs", "bananas.testing.run")
    assert no_url.returncode != 0
    said = [line for line in (no_url.stdout + no_url.stderr).splitlines() if "--bananas-url" in line]
    assert said, no_url.stdout + no_url.stderr
    assert " passed" not in no_url.stdout and " skipped" not in no_url.stdout

    (project / "test_theirs.py").write_text("def test_x(clock):\n    pass\n")
    theirs = pytest_run("test_theirs.py")
    assert theirs.returncode != 0
    assert "fixture 'clock' not found" in theirs.stdout, theirs.stdout[-2000:]
