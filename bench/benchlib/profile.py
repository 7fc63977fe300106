"""Summarise py-spy collapsed stacks (run.py --profile DIR): where the worker's CPU goes.

    python bench/benchlib/profile.py DIR/bananas-redis-w2-0.txt [--top 25]

Prints the functions with the most samples on the stack (inclusive) and at the top (self)."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("files", nargs="+")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
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
            for frame in set(frames):
                inclusive[frame] += n
    print(f"{total} samples")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"\n-- {title} --")
        for frame, n in counter.most_common(args.top):
            print(f"{100 * n / total:5.1f}%  {frame[:150]}")


if __name__ == "__main__":
    main()
