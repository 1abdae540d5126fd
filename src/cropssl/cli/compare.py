"""``cropssl-compare RUN_DIR... [--out DIR]``: one markdown + CSV table comparing pre-training runs.

A directory that is not a run itself (e.g. a multirun sweep directory) stands for all runs inside it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cropssl.compare import compare, find_runs, to_markdown


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cropssl-compare``."""
    p = argparse.ArgumentParser(prog="cropssl-compare", description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="run directories, or folders holding run directories")
    p.add_argument("--out", default=".", help="where to write compare.md/.csv (default: the current folder)")
    args = p.parse_args(argv)
    runs: list[Path] = []
    for r in map(Path, args.runs):
        runs.extend([r] if (r / "summary.json").exists() else find_runs(r))
    if not runs:
        print(f"cropssl-compare: error: no finished runs (summary.json) in {args.runs}", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        df = compare(runs, out)
    except FileNotFoundError as exc:
        print(f"cropssl-compare: error: {exc}", file=sys.stderr)
        return 2
    print(to_markdown(df))
    print(f"wrote {out / 'compare.md'} and {out / 'compare.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
