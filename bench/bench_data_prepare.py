"""Benchmark: prepare the shared Amazon-2018 Video Games log (453,637 interactions) from its raw gzip TSVs
to cached Parquet splits, and load the cached splits for training.

    .venv/bin/python bench/bench_data_prepare.py [--runs 5] [--split quantile|leave_one_out]

Each prepare runs in a fresh Python process with rebuild=True (no cache reuse), so its peak RSS is its own;
the time is measured inside the process, around ``prepare`` only (imports excluded), as wall and CPU time
(CPU time is the robust figure on a shared machine). Targets: prepare <= 30 s, load <= 2 s. Prints
medians and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VG = ROOT.parent / "shared" / "datasets" / "amazon2018-videogames"

CHILD = r"""
import json, resource, sys, time
from rearec.data import load_dataset, prepare
spec, cache, mode = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0, c0 = time.perf_counter(), time.process_time()
if mode == "prepare":
    prepare(spec, cache, rebuild=True)
    rows = None
else:
    data = load_dataset(spec, cache)
    rows = len(data.train) + len(data.valid) + len(data.test)
seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak / 1024, "import_rss_mb": base / 1024,
                  "rows": rows}))
"""


def run(spec: dict, cache: str, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec), cache, mode], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--split", default="quantile", choices=["quantile", "leave_one_out"])
    parser.add_argument("--cache-dir", default=None, help="default: a temporary folder")
    args = parser.parse_args()
    spec = {"interactions": str(VG / "interactions.tsv.gz"), "items": str(VG / "items.tsv.gz"),
            "split": {"method": args.split}}
    cache = args.cache_dir or tempfile.mkdtemp(prefix="rearec-bench-")
    prep = [run(spec, cache, "prepare") for _ in range(args.runs)]
    load = [run(spec, cache, "load") for _ in range(args.runs)]
    result = {
        "dataset": "amazon2018-videogames", "split": args.split, "runs": args.runs,
        "prepare_median_s": statistics.median(r["seconds"] for r in prep),
        "prepare_all_s": [round(r["seconds"], 2) for r in prep],
        "prepare_cpu_median_s": statistics.median(r["cpu_seconds"] for r in prep),
        "prepare_peak_rss_mb": max(r["peak_rss_mb"] for r in prep),
        "rss_after_imports_mb": statistics.median(r["import_rss_mb"] for r in prep),
        "load_median_s": statistics.median(r["seconds"] for r in load),
        "load_all_s": [round(r["seconds"], 2) for r in load],
        "load_cpu_median_s": statistics.median(r["cpu_seconds"] for r in load),
        "load_peak_rss_mb": max(r["peak_rss_mb"] for r in load),
        "rows": load[0]["rows"],
    }
    print(f"prepare (raw -> cached splits): median {result['prepare_median_s']:.2f} s wall "
          f"({result['prepare_cpu_median_s']:.2f} s CPU) over {args.runs} runs {result['prepare_all_s']}, peak RSS {result['prepare_peak_rss_mb']:.0f} MB "
          f"(after imports {result['rss_after_imports_mb']:.0f} MB)")
    print(f"load (cached splits -> SplitData): median {result['load_median_s']:.2f} s wall "
          f"({result['load_cpu_median_s']:.2f} s CPU) {result['load_all_s']}, "
          f"peak RSS {result['load_peak_rss_mb']:.0f} MB; {result['rows']:,} rows")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
