"""Summarise py-spy collapsed stacks (run.py --profile DIR): where the worker's CPU goes.

    python bench/benchlib/profile.py DIR/bananas-redis-w2-0.txt [--top 25]

Prints the functions with the most samples on the stack (inclusive) and at the top (self), and
the self samples summed by component (asyncio, the client library, Bananas, the job model's
helpers: :func:`component`, shared with profile_submit.py's cProfile summaries)."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

# (start of a module's path, component), the first match wins: redis-py's own asyncio package
# before the standard library's.
PATH_COMPONENTS = [
    ("bananas_redis/", "bananas_redis"),
    ("bananas_sql/", "bananas_sql"),
    ("bananas/", "bananas core"),
    ("redis/", "redis-py"),
    ("hiredis", "redis-py"),
    ("psycopg", "psycopg"),
    ("asyncio/", "asyncio"),
    ("selectors.py", "asyncio"),
    ("socket.py", "socket"),
    ("json/", "json"),
    ("uuid.py", "uuid"),
    ("attr/", "attrs"),
    ("threading.py", "threads"),
    ("concurrent/", "threads"),
    ("adapters/", "job body (bench adapter)"),
    ("<attrs generated", "attrs"),
]

# C functions (cProfile names them "{method 'recv' of '_socket.socket' objects}"): by name.
BUILTIN_COMPONENTS = [
    ("recv", "socket: waiting for the reply"),
    ("'poll'", "socket: waiting for the reply"),
    ("'select'", "socket: waiting for the reply"),
    ("send", "socket: send"),
    ("acquire", "waiting for another thread"),
    ("encode", "json"),
    ("scanstring", "json"),
    ("uuid", "uuid"),
    ("urandom", "uuid"),
]


def component(path: str, name: str = "") -> str:
    """Which part of the stack a function belongs to, from its source path (or, for a C function,
    its name)."""
    if path in ("~", ""):
        for needle, label in BUILTIN_COMPONENTS:
            if needle in name:
                return label
        return "other C functions"
    for root in ("site-packages/", "/src/", "/lib/python3"):  # to the module's own path
        if root in path:
            path = path[path.rindex(root) + len(root) :]
            if root == "/lib/python3":
                path = path[path.find("/") + 1 :]
    for needle, label in PATH_COMPONENTS:
        if path.startswith(needle) or f"/{needle}" in path:
            return label
    return "other"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("files", nargs="+")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    by_component: Counter[str] = Counter()
    total = 0
    for file in args.files:
        for line in Path(file).read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack:
                continue
            n = int(count)
            frames = stack.split(";")
            total += n
            own[frames[-1]] += n
            top = frames[-1]  # "function (path:line)"; a bare "process N:..." has no Python frame
            by_component[component(top[top.rfind("(") + 1 :]) if top.endswith(")") else "no Python frame"] += n
            for frame in set(frames):
                inclusive[frame] += n
    print(f"{total} samples")
    for title, counter in (("self by component", by_component), ("inclusive", inclusive), ("self", own)):
        print(f"\n-- {title} --")
        for frame, n in counter.most_common(args.top):
            print(f"{100 * n / total:5.1f}%  {frame[:150]}")


if __name__ == "__main__":
    main()
