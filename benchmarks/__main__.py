"""`python -m benchmarks`: every benchmark of the project in one run, results in JSON, docs regenerated.

    python -m benchmarks                 # the full suite (<= 15 min on the 2-core CPU machine)
    python -m benchmarks --smoke --out /tmp/b --docs /tmp/b/benchmarks.md   # tiny sizes (the smoke test)
    python -m benchmarks --only kernels search   # some steps; the others' last results are kept

Writes benchmarks/results/<step>.json (plus suite.json: machine, versions, date, load, step
times) and regenerates docs/benchmarks.md with its PNG plots. Each step is one benchmark module;
a step that fails is recorded as failed with its error, and the suite goes on.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

from benchmarks.common import load_average, machine, progress

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"

FULL = {
    "arch": "ViT-B-32",
    "kernels": {"batches": [1, 8, 32], "seconds": 1.5, "catalog_size": 150, "queries": 30},
    "search": {"n": 100_000, "blocks": 3, "seconds": 5.0, "concurrency": 16, "scaling_sizes": (10_000,),
               "scaling_levels": (1, 4, 16, 64), "scaling_seconds": 4.0},
    "indexing": {"n": 192},
    "encoder_runtimes": ["--seconds", "1", "--batches", "1", "8", "32"],
    "triton_batching": ["--variant", "int8", "--concurrency", "1", "16", "--seconds", "3"],
    "store_search": ["--n", "50000", "--queries", "50"],
}
SMOKE = {
    "arch": "mm-tiny-clip",
    "kernels": {"batches": [1, 4], "seconds": 0.1, "catalog_size": 30, "queries": 5},
    "search": {"n": 400, "blocks": 1, "seconds": 1.0, "concurrency": 4, "scaling_sizes": (200,), "scaling_levels": (1, 4),
               "scaling_seconds": 0.5},
    "indexing": {"n": 12},
    "encoder_runtimes": ["--seconds", "0.1", "--batches", "1", "2"],
    "triton_batching": ["--variant", "int8", "--concurrency", "1", "4", "--seconds", "0.5"],
    "store_search": ["--n", "2000", "--queries", "5"],
}
STEPS = ["kernels", "search", "indexing", "encoder_runtimes", "triton_batching", "store_search"]


def export_repository(arch: str, work: Path) -> Path:
    """The graphs every step measures: fp32 + dynamic int8 + calibrated static int8 (cached in --work)."""
    repository = work / f"repo-{arch}"
    if (repository / "manifest.json").is_file():
        manifest = json.loads((repository / "manifest.json").read_text())
        if "int8_static" in manifest["models"]["clip_image"].get("variants", {}):
            return repository
    from export.cli import run_export

    progress(f"export: {arch} (random weights) with int8 and int8_static")
    run_export({"preset": "bench", "clip": {"arch": arch, "pretrained": None}, "blip": None}, repository, 17, ["int8", "int8_static"],
               log=lambda m: None)
    return repository


def _script(name: str, args: list[str], out: Path, timeout: float) -> dict:
    """One of the standalone benchmark scripts, its JSON file read back."""
    json_flag = "--out" if name == "store_search" else "--json"
    command = [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args, json_flag, str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=str(ROOT))
    if done.returncode:
        raise RuntimeError(f"exit {done.returncode}: {(done.stderr or done.stdout).strip()[-1500:]}")
    data = json.loads(out.read_text())
    return data if isinstance(data, dict) else {"rows": data}


def run_step(step: str, profile: dict, repository: Path, work: Path, results: Path, with_peer: bool, trained: Path | None = None) -> dict:
    if step == "kernels":
        from benchmarks import kernels

        return kernels.run(profile["arch"], repository=repository, quality_repository=trained, **profile["kernels"])
    if step == "search":
        from benchmarks import search_peer

        return search_peer.run(repository, work=work, with_peer=with_peer, **profile["search"])
    if step == "indexing":
        from benchmarks import indexing

        return indexing.run(repository, work=work, with_peer=with_peer, **profile["indexing"])
    timeout = 300 if profile is FULL else 240
    if step == "encoder_runtimes":
        return _script(step, ["--arch", profile["arch"], "--repository", str(repository), *profile[step]], work / f"{step}.json", timeout)
    if step == "triton_batching":
        return _script(step, ["--source", str(repository), *profile[step]], work / f"{step}.json", timeout)
    if step == "store_search":
        return _script(step, profile[step], work / f"{step}.json", timeout)
    raise ValueError(f"unknown step {step!r}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and the tiny model (seconds; the smoke test)")
    parser.add_argument("--only", nargs="+", choices=STEPS, help="run these steps only")
    parser.add_argument("--skip", nargs="+", choices=STEPS, default=[], help="leave these steps out")
    parser.add_argument("--no-peer", action="store_true", help="leave out the clip-retrieval peer")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("MM_BENCH_WORK", "/tmp/mm-bench")), help="exports and scratch")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results folder (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--trained-repository", type=Path, default=os.environ.get("MM_BENCH_TRAINED_REPO") or None,
                        help="an export of a trained CLIP (--int8 --int8-static): kernels also ranks with it (env MM_BENCH_TRAINED_REPO)")
    parser.add_argument("--docs", type=Path, default=DOCS, help="the markdown to regenerate (its PNG plots go beside it)")
    args = parser.parse_args(argv)
    profile = SMOKE if args.smoke else FULL
    steps = [s for s in (args.only or STEPS) if s not in args.skip]
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    suite = {"machine": machine(), "profile": "smoke" if args.smoke else "full", "command": "python -m benchmarks " + " ".join(argv or sys.argv[1:]),
             "steps": {}}
    repository = export_repository(profile["arch"], args.work)
    for step in steps:
        progress(f"== {step} ==")
        t0 = time.perf_counter()
        load_before = load_average()
        try:
            result = run_step(step, profile, repository, args.work, args.out, not args.no_peer, args.trained_repository)
            status = "ok"
        except Exception as exc:  # noqa: BLE001 - one failed benchmark must not lose the others
            traceback.print_exc()
            result, status = {"error": f"{type(exc).__name__}: {exc}"[:2000]}, "failed"
        seconds = time.perf_counter() - t0
        result["_suite"] = {"status": status, "seconds": round(seconds, 1), "load_average_before": round(load_before, 2),
                            "load_average_after": round(load_average(), 2), "profile": suite["profile"]}
        (args.out / f"{step}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        suite["steps"][step] = result["_suite"]
        progress(f"{step}: {status} in {seconds:.0f} s")
    suite["total_s"] = round(time.perf_counter() - started, 1)
    suite["machine"]["load_average_end"] = round(load_average(), 2)
    previous = {}
    if (args.out / "suite.json").is_file():
        previous = json.loads((args.out / "suite.json").read_text()).get("steps", {})
    suite["steps"] = {**previous, **suite["steps"]}
    (args.out / "suite.json").write_text(json.dumps(suite, indent=2) + "\n")
    from benchmarks.report import write_report

    write_report(args.out, args.docs)
    progress(f"suite done in {suite['total_s']:.0f} s; results in {args.out}, report {args.docs}")
    return 0 if all(s["status"] == "ok" for s in suite["steps"].values() if s) else 1


if __name__ == "__main__":
    sys.exit(main())
