"""Re-evaluate every saved circuit in baselines/results and compare with its stored test numbers.

    python baselines/scripts/check_saved.py [--results baselines/results]

Each circuit is re-measured (sufficiency, necessity, the empty circuit; `circuitbench circuit eval`) on the
model its unit names, at the thread count the unit recorded, and every number must equal the stored one
exactly. This is how a redesign shows that the committed baselines still mean what they say. Prints one
line per model and method, and exits 1 if any number differs.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import torch
from tqdm import tqdm

import circuitbench
from circuitbench.results.circuit import circuit_paths
from circuitbench.results.store import unit_files
from circuitbench.runs.saved import compare_stored, load_saved, reevaluate


def main(argv: list[str] | None = None) -> int:
    """Re-evaluate every saved circuit; 0 when every stored number is reproduced exactly."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parents[1] / "results")
    args = parser.parse_args(argv)
    files = [f for f in unit_files(args.results) if circuit_paths(f)[0].is_file()]
    models: dict[str, object] = {}
    equal, differ = Counter(), Counter()
    failures = []
    for path in tqdm(files, desc="circuits", unit="circuit"):
        saved = load_saved(path)
        u = saved.prov.unit
        torch.set_num_threads(saved.prov.threads or 1)
        if u.model.name not in models:
            models[u.model.name] = circuitbench.load_model(u.model.name, device="cpu", dtype=u.dtype)
        rows = compare_stored(saved, reevaluate(saved, models[u.model.name]))  # type: ignore[arg-type]
        key = (u.model.name, u.method)
        if all(r["equal"] for r in rows):
            equal[key] += 1
        else:
            differ[key] += 1
            failures += [f"{path}: {r['metric']} stored {r['stored']}, now {r['now']}" for r in rows if not r["equal"]]
    for key in sorted(set(equal) | set(differ)):
        print(f"{key[0]} {key[1]}: {equal[key]} circuits reproduce every stored number, {differ[key]} differ")
    print("\n".join(failures[:20]))
    print(f"{sum(equal.values())} of {len(files)} saved circuits reproduce their stored test numbers exactly")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
