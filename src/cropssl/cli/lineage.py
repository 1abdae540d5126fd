"""``cropssl-lineage``: print where a checkpoint or an exported encoder came from."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cropssl.artifacts import CONFIG_FILE


def read_lineage(path: str | Path) -> list[dict[str, Any]]:
    """The lineage chain (oldest run first) of a checkpoint, a continue bundle or an export directory."""
    p = Path(path)
    if p.is_dir():
        config = p / CONFIG_FILE
        if not config.exists():
            raise FileNotFoundError(f"{p} has no config.json: not a cropssl export directory")
        return list(json.loads(config.read_text()).get("lineage") or [])
    from cropssl.checkpointing import load_checkpoint

    return list(load_checkpoint(p).get("cropssl", {}).get("lineage") or [])


def format_lineage(chain: list[dict[str, Any]]) -> str:
    """Human-readable lineage, one block per run."""
    lines = []
    for i, rec in enumerate(chain):
        parent = rec.get("parent") or {}
        lines.append(
            f"[{i}] {rec.get('method')} run {rec.get('run_dir')} ({rec.get('start_mode')}, "
            f"{rec.get('steps', '?')} steps, started {rec.get('started')})"
        )
        for r in rec.get("resumes", []):
            step, ckpt, at = r.get("from_step"), r.get("checkpoint"), r.get("at")
            lines.append(f"    resumed at step {step} from {ckpt} ({at})")
        if parent:
            lines.append(
                f"    from {parent.get('kind')} {parent.get('path')} sha256={str(parent.get('sha256'))[:16]}"
            )
        for d in rec.get("data", []):
            lines.append(
                f"    data weight {d.get('weight'):.2f}: {d.get('manifest', d.get('first'))} "
                f"({d.get('shards')} shards, manifest sha256={str(d.get('manifest_sha256'))[:16]})"
            )
    return "\n".join(lines) if lines else "(no lineage recorded)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cropssl-lineage``."""
    p = argparse.ArgumentParser(prog="cropssl-lineage", description=__doc__)
    p.add_argument("path", help="a checkpoint (.ckpt) or an export directory")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    args = p.parse_args(argv)
    try:
        chain = read_lineage(args.path)
    except FileNotFoundError as exc:
        print(f"cropssl-lineage: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(chain, indent=2) if args.json else format_lineage(chain))
    return 0


if __name__ == "__main__":
    sys.exit(main())
