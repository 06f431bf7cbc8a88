"""`dancewire bench NAME --json OUT`: every module in benchmarks/ with `add_arguments` and `run` is a benchmark.

A benchmark's `run(args) -> dict` returns {"metrics": {...}, ...}; this wrapper adds the
machine description, writes the JSON to --json and leaves plots beside it (--plots DIR).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import time
from pathlib import Path

import benchmarks


def _discover() -> dict[str, object]:
    found = {}
    for info in pkgutil.iter_modules(benchmarks.__path__):
        if info.name.startswith("_") or info.name in ("cli", "common"):
            continue
        module = importlib.import_module(f"benchmarks.{info.name}")
        if hasattr(module, "run") and hasattr(module, "add_arguments"):
            found[info.name] = module
    return found


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks (write JSON and PNG plots)")
    names = bench.add_subparsers(dest="bench", metavar="NAME")
    for name, module in sorted(_discover().items()):
        doc = (module.__doc__ or name).strip().splitlines()[0]
        p = names.add_parser(name, help=doc, description=module.__doc__)
        p.add_argument("--json", type=Path, default=Path(f"out/bench-{name}.json"), help="where to write results")
        p.add_argument("--plots", type=Path, default=None, help="folder for PNG plots (default: beside --json)")
        module.add_arguments(p)
        p.set_defaults(func=lambda args, m=module, n=name: _run(n, m, args))


def _commit() -> str | None:
    """The git commit the figures were measured at (None outside a checkout), '+' when files differ."""
    import subprocess

    from dancewire.paths import REPO_ROOT
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def _run(name: str, module, args) -> int:
    from benchmarks.common import machine_info

    args.json.parent.mkdir(parents=True, exist_ok=True)
    if args.plots is None:
        args.plots = args.json.parent
    args.plots.mkdir(parents=True, exist_ok=True)
    result = module.run(args)
    result = {"benchmark": name, "machine": machine_info(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "commit": _commit(), **result}
    tmp = args.json.with_name(f".{args.json.name}.{os.getpid()}.tmp")     # an interrupted write leaves the old file
    tmp.write_text(json.dumps(result, indent=2, default=float))
    os.replace(tmp, args.json)
    print(json.dumps(result.get("metrics", {}), indent=2, default=float))
    print(f"wrote {args.json}")
    return 0
