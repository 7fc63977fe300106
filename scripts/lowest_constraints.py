"""Print a pip constraints file pinning every declared runtime dependency to its floor.

Reads the ``pyproject.toml`` of each distribution named on the command line: its
dependencies and every optional extra. With ``--targets`` it prints instead what to install:
each distribution's directory with all its extras (``bananas_core[demo,testing]``).

``name>=X`` becomes ``name==X``; the sibling ``bananas-*`` distributions are skipped
(they are installed from the working tree).
A dependency without a ``>=`` floor is an error: a floor we do not state cannot be tested.
Two distributions declaring different floors for one package get the higher one.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

REQUIREMENT = re.compile(r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?P<spec>[^;]*?)\s*(?:;.*)?$")
FLOOR = re.compile(r"(?:^|,)\s*>=\s*(?P<version>[0-9][0-9A-Za-z.]*)\s*(?:,|$)")


def normalise(name: str) -> str:
    """The PEP 503 form of a project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def version_key(version: str) -> tuple[int, ...]:
    """Release numbers of a plain ``X.Y.Z`` version, for picking the higher of two floors."""
    return tuple(int(part) for part in re.findall(r"\d+", version))


def floors(pyproject: Path) -> list[tuple[str, str]]:
    """``(project, floor)`` for each runtime dependency and extra declared in ``pyproject``."""
    project = tomllib.loads(pyproject.read_text("utf-8"))["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    found: list[tuple[str, str]] = []
    for requirement in requirements:
        match = REQUIREMENT.match(requirement)
        if match is None:
            raise SystemExit(f"{pyproject}: cannot read the requirement {requirement!r}")
        name = normalise(match["name"])
        if name.startswith("bananas"):
            continue
        floor = FLOOR.search(match["spec"])
        if floor is None:
            raise SystemExit(f"{pyproject}: {requirement!r} has no '>=' floor; declare the lowest version it supports")
        found.append((name, floor["version"]))
    return found


def target(pyproject: Path) -> str:
    """The distribution's directory with every extra it declares, as pip takes it."""
    extras = sorted(tomllib.loads(pyproject.read_text("utf-8"))["project"].get("optional-dependencies", {}))
    return f"{pyproject.parent}[{','.join(extras)}]" if extras else str(pyproject.parent)


def main(paths: list[str]) -> None:
    if paths[:1] == ["--targets"]:
        for path in paths[1:]:
            print(target(Path(path)))
        return
    merged: dict[str, str] = {}
    for path in paths:
        for name, version in floors(Path(path)):
            if name not in merged or version_key(version) > version_key(merged[name]):
                merged[name] = version
    for name in sorted(merged):
        print(f"{name}=={merged[name]}")


if __name__ == "__main__":
    main(sys.argv[1:])
