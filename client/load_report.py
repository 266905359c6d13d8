"""The load generator's results as a table, JSON, CSV and an optional PNG plot."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

from client.load import StepResult
from client.tables import format_table

HEADERS = ["step", "sent", "ok", "errors", "QPS", "p50 ms", "p95 ms", "p99 ms", "max ms"]


def _row(result: StepResult) -> list[Any]:
    step = f"c={int(result.level)}" if result.mode == "concurrency" else f"rate={result.level:g}/s"
    lat = result.latencies_ms
    return [
        step,
        result.sent,
        result.ok,
        result.error_count,
        f"{result.qps:.1f}",
        _ms(result.percentile(50)),
        _ms(result.percentile(95)),
        _ms(result.percentile(99)),
        _ms(float(lat.max()) if lat.size else None),
    ]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(results: Sequence[StepResult]) -> str:
    text = format_table(HEADERS, [_row(r) for r in results], right=[False] + [True] * (len(HEADERS) - 1))
    codes = sorted({code for r in results for code in r.errors})
    if codes:
        text += "\nerrors by code: " + "; ".join(
            f"{_row(r)[0]} " + ", ".join(f"{c} {n}" for c, n in r.errors.items()) for r in results if r.errors
        )
    return text


def as_json(results: Sequence[StepResult], meta: dict[str, Any]) -> str:
    return json.dumps({**meta, "steps": [r.as_dict() for r in results]}, indent=2)


def as_csv(results: Sequence[StepResult]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["mode", "level", "sent", "ok", "errors", "seconds", "qps", "p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms"])
    for r in results:
        d = r.as_dict()
        lat = d["latency_ms"]
        writer.writerow([r.mode, r.level, r.sent, r.ok, r.error_count, d["seconds"], d["qps"], lat["p50"], lat["p95"], lat["p99"], lat["max"], lat["mean"]])
    return buffer.getvalue()


def plot(results: Sequence[StepResult], path: Path, title: str = "") -> str | None:
    """Latency percentiles and throughput against the step level; returns why it was skipped, or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install matplotlib)"
    levels = [r.level for r in results]
    fig, left = plt.subplots(figsize=(7, 4.2), dpi=120)
    for q, style in ((50, "o-"), (95, "s--"), (99, "^:")):
        left.plot(levels, [r.percentile(q) or float("nan") for r in results], style, label=f"p{q} latency")
    left.set_xlabel("concurrency" if results and results[0].mode == "concurrency" else "target rate (req/s)")
    left.set_ylabel("latency (ms)")
    if len(levels) > 1 and min(levels) > 0 and max(levels) / min(levels) >= 8:
        left.set_xscale("log", base=2)
    left.set_xticks(levels, [f"{level:g}" for level in levels])
    left.set_ylim(bottom=0)
    right = left.twinx()
    right.plot(levels, [r.qps for r in results], "k-", linewidth=2, alpha=0.6, label="throughput")
    right.set_ylabel("throughput (QPS)")
    right.set_ylim(bottom=0, top=max([r.qps for r in results] + [1.0]) * 1.15)
    lines = left.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    left.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    left.set_title(title or "gateway load test")
    left.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return None
