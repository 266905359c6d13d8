"""The leak-free evaluation: reference baselines and fusion variants (tuned on validation, reported on test), and
the same searches through the real gateway + Milvus Lite, compared with the reference.

One run: build the validation and test splits (quality/evalset.py), recompute every vector from the
checkpoint (quality/reference.py), fit calibration and choose weights per query type on validation
(quality/tuning.py), score every method on test with 95% bootstrap intervals, then index the test
catalog through UpsertProducts and send every test query through Search in each gateway mode
(quality/system.py). Writes eval.json, eval.md and eval.png.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from PIL import Image

from quality.evalset import EvalSplit, NoiseConfig, SplitSizes, build_splits, write_split
from quality.metrics import bootstrap_ci, per_query
from quality.reference import (CHANNELS, Calibration, Catalog, ReferenceModel, ReferenceTagger, Scores, build_catalog,
                               channel_scores, compose)
from quality.tuning import Variant, grid_search

TASKS = ("text->image", "image->image", "composed", "brand/SKU", "text mix")
TEXT_TASKS = ("text->image", "brand/SKU", "text mix")  # the tasks of text queries (BM25 and the hybrids)
QUERY_TYPES = ("text", "image", "composed")
KIND_OF_TASK = {"text->image": ("text",), "image->image": ("image",), "composed": ("composed",), "brand/SKU": ("brand_sku",),
                "text mix": ("text", "brand_sku")}
METRICS = ("P@10", "R@10", "nDCG@10")
CALIBRATION_MARGIN = 0.01  # mean validation P@10 over the three query types


@dataclass
class EvalConfig:
    repository: Path
    out: Path = Path("runs/eval")
    workdir: Path = Path("runs/eval-work")
    sizes: SplitSizes = SplitSizes()
    noise: NoiseConfig = NoiseConfig()
    seed: int = 0
    text_weight: float = 0.5
    k: int = 10
    gateway: bool = True
    address: str | None = None
    gateway_args: list[str] = field(default_factory=list)
    per_facet: int = 2
    step: float = 0.1
    bootstrap: int = 2000
    gateway_modes: tuple[str, ...] | None = None  # None = every mode of gateway_modes()
    source: tuple[np.ndarray, np.ndarray] | None = None  # (images, labels); default Fashion-MNIST's test split


def default_weights(query_type: str) -> dict[str, float]:
    """The gateway's configured default weights of a query type (its settings object, the one source of defaults)."""
    from gateway.settings import Settings

    return dict(Settings().query_weights(query_type))


def candidates() -> int:
    """Candidates per channel of the gateway's multi_vector mode (RRF ranks within them)."""
    from gateway.settings import Settings

    return int(Settings().multi_vector_candidates)


# -- reference side ------------------------------------------------------------------------------
@dataclass
class Prepared:
    split: EvalSplit
    folder: Path
    ids: list[str]
    catalog: Catalog  # with tags
    no_tags: Catalog  # the caption/tags channel absent (no BLIP, no tags)
    scores: dict[str, Scores]  # per query kind, with tags
    scores_no_tags: dict[str, Scores]
    relevant: dict[str, list[set]]
    queries: dict[str, list]


def prepare(split: EvalSplit, folder: Path, model: ReferenceModel, tagger: ReferenceTagger, text_weight: float,
            log: Callable[[str], None]) -> Prepared:
    started = time.perf_counter()
    write_split(split, folder)
    ids = [p.id for p in split.products]
    photos = (Image.open(folder / "images" / f"{pid}.png") for pid in ids)
    catalog = build_catalog(model, ids, photos, [p.title for p in split.products], [p.description for p in split.products], tagger)
    no_tags = Catalog(catalog.ids, catalog.vectors, {**catalog.present, "caption": np.zeros(len(ids), bool)}, catalog.texts,
                      [[] for _ in ids], catalog.bm25)
    position = {pid: i for i, pid in enumerate(ids)}
    texts = sorted({q.text for q in split.queries if q.text})
    text_vec = dict(zip(texts, model.texts(texts)))
    scores, scores_nt, relevant, queries = {}, {}, {}, {}
    for kind in ("text", "image", "composed", "brand_sku"):
        qs = [q for q in split.queries if q.kind == kind]
        q = np.stack([compose(catalog.vectors["image"][position[x.image_id]] if x.image_id else None, text_vec.get(x.text),
                              text_weight) for x in qs])
        exclude = [position[x.exclude] if x.exclude else -1 for x in qs]
        keyword_texts = [x.text if x.kind in ("text", "brand_sku") else "" for x in qs]  # BM25 serves text queries only
        scores[kind] = channel_scores(catalog, q, keyword_texts, exclude)
        scores_nt[kind] = Scores(scores[kind].channel, no_tags.present, scores[kind].exclude)
        relevant[kind] = [x.relevant for x in qs]
        queries[kind] = qs
    log(f"[reference] {split.name}: {len(ids)} products, {len(split.queries)} queries in {time.perf_counter() - started:.1f} s")
    return Prepared(split, folder, ids, catalog, no_tags, scores, scores_nt, relevant, queries)


def stack(parts: Sequence[Scores]) -> Scores:
    return Scores({c: np.concatenate([p.channel[c] for p in parts]) for c in parts[0].channel}, parts[0].present,
                  np.concatenate([p.exclude for p in parts]))


def task_scores(prep: Prepared, task: str, tags: bool = True) -> tuple[Scores, list[set], list]:
    source = prep.scores if tags else prep.scores_no_tags
    kinds = KIND_OF_TASK[task]
    return (stack([source[k] for k in kinds]), [r for k in kinds for r in prep.relevant[k]], [q for k in kinds for q in prep.queries[k]])


@dataclass
class Method:
    """A reference method: a variant per query type, on the catalog with or without tags."""

    name: str
    variants: dict[str, Variant]  # query type -> variant
    tags: bool = True
    tasks: tuple[str, ...] = TASKS
    gateway_twin: str | None = None  # the gateway mode that should equal it

    def rankings(self, prep: Prepared, task: str, calibration: Calibration | None, k: int) -> list[list[str]]:
        s, _, queries = task_scores(prep, task, self.tags)
        out: list[list[str]] = [[] for _ in queries]
        for qtype in dict.fromkeys(q.query_type for q in queries):
            rows = np.asarray([i for i, q in enumerate(queries) if q.query_type == qtype])
            for i, ranked in zip(rows, self.variants[qtype].rankings(s.subset(rows), qtype, calibration, prep.ids, k)):
                out[i] = ranked
        return out


def same(variant: Variant) -> dict[str, Variant]:
    return {t: variant for t in QUERY_TYPES}


def tune(val: Prepared, calibration: Calibration, step: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Weights per query type for each tuned variant, chosen on validation; and whether to calibrate."""
    chosen: dict[str, Any] = {"raw": {}, "calibrated": {}, "no_tags": {}, "hybrid": {}, "validation": {}}
    for qtype, task in (("text", "text->image"), ("image", "image->image"), ("composed", "composed")):
        s, rel, _ = task_scores(val, task)
        for label, calibrated in (("raw", False), ("calibrated", True)):
            weights, value, _ = grid_search(s, rel, val.ids, qtype, CHANNELS, calibration, calibrated, step=step, progress=log)
            chosen[label][qtype] = weights
            chosen["validation"][f"{label} {qtype}"] = value
        s_nt, rel, _ = task_scores(val, task, tags=False)
        weights, value, _ = grid_search(s_nt, rel, val.ids, qtype, ("image", "title"), calibration, False, step=step, progress=log)
        chosen["no_tags"][qtype] = {**weights, "caption": 0.0}
        chosen["validation"][f"no_tags {qtype}"] = value
    mean = {label: np.mean([chosen["validation"][f"{label} {t}"] for t in QUERY_TYPES]) for label in ("raw", "calibrated")}
    # calibration is one more thing to ship and keep in step: it must beat raw weights by CALIBRATION_MARGIN
    chosen["calibrate"] = bool(mean["calibrated"] > mean["raw"] + CALIBRATION_MARGIN)
    s, rel, _ = task_scores(val, "text mix")
    for calibrated in (False, True):
        weights, value, _ = grid_search(s, rel, val.ids, "text", (*CHANNELS, "keyword"), calibration, calibrated,
                                        metric="nDCG@10", step=step, progress=log)
        chosen["validation"][f"hybrid {'calibrated' if calibrated else 'raw'} text mix nDCG@10"] = value
        if not chosen["hybrid"] or value > chosen["hybrid"]["value"]:
            chosen["hybrid"] = {"weights": weights, "calibrated": calibrated, "value": value}
    label = "calibrated" if chosen["calibrate"] else "raw"
    best = (-1.0, 0.0)
    for w in np.round(np.arange(0.0, 1.0 + 1e-9, step), 6):
        variant = Variant("hybrid_rrf", {**chosen[label]["text"], "keyword": float(w)}, chosen["calibrate"], "hybrid_rrf")
        value = float(per_query(variant.rankings(s, "text", calibration, val.ids), rel)["nDCG@10"].mean())
        if value > best[0]:
            best = (value, float(w))
    chosen["hybrid_rrf"] = {"keyword": best[1], "value": best[0]}
    chosen["validation"]["hybrid rrf text mix nDCG@10"] = best[0]
    log(f"[tune] hybrid RRF keyword list weight {best[1]} -> nDCG@10 {best[0]:.3f}")
    return chosen


def tune_gateway_keyword(val: Prepared, cfg: EvalConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """The gateway keyword channel's pivot, exponent and hybrid weight, on validation (quality/keyword.py)."""
    from quality.keyword import milvus_bm25, tune_keyword

    s, relevant, queries = task_scores(val, "text mix")
    bm25 = milvus_bm25(val.ids, val.split.products, val.catalog.tags, [q.text for q in queries], cfg.workdir / "keyword-validation")
    return tune_keyword(s, bm25, relevant, [q.kind for q in queries], val.ids, default_weights("text"), cfg.step / 2, log)


def methods(chosen: Mapping[str, Any]) -> list[Method]:
    d = {t: default_weights(t) for t in QUERY_TYPES}
    one = lambda c: {x: float(x == c) for x in CHANNELS}  # noqa: E731
    label = "calibrated" if chosen["calibrate"] else "raw"
    shipped = {t: Variant("default", chosen[label][t], chosen["calibrate"]) for t in QUERY_TYPES}
    hybrid = dict(shipped)
    hybrid["text"] = Variant("hybrid", chosen["hybrid"]["weights"], chosen["hybrid"]["calibrated"])
    return [
        Method("BM25 title+description", same(Variant("bm25", {"keyword": 1.0})), tasks=TEXT_TASKS),
        Method("image only", same(Variant("image", one("image"))), gateway_twin="image only"),
        Method("title only", same(Variant("title", one("title"))), gateway_twin="title only"),
        Method("caption/tags only", same(Variant("caption", one("caption"))), gateway_twin="caption/tags only"),
        Method("fused, gateway default weights", {t: Variant("fixed", d[t]) for t in QUERY_TYPES}, gateway_twin="fused (default)"),
        Method("fused, default weights, no tags", {t: Variant("fixed", {**d[t], "caption": 0.0}) for t in QUERY_TYPES}, tags=False),
        Method("multi-vector RRF, default weights", {t: Variant("rrf", d[t], combine="rrf", depth=candidates()) for t in QUERY_TYPES},
               gateway_twin="multi_vector rrf (default)"),
        Method("tuned per query type", {t: Variant("tuned", chosen["raw"][t]) for t in QUERY_TYPES}, gateway_twin="fused, tuned request weights"),
        Method("calibrated + tuned per query type", {t: Variant("cal", chosen["calibrated"][t], True) for t in QUERY_TYPES}),
        Method("tuned, no tags", {t: Variant("nt", chosen["no_tags"][t]) for t in QUERY_TYPES}, tags=False),
        Method(f"SHIPPED DEFAULT ({label} + tuned)", shipped),
        Method("hybrid: shipped + BM25 keyword (text)", hybrid, tasks=TEXT_TASKS),
        Method("hybrid RRF: shipped list + BM25 list (text)", {**shipped, "text": Variant(
            "hybrid_rrf", {**chosen[label]["text"], "keyword": chosen["hybrid_rrf"]["keyword"]}, chosen["calibrate"], "hybrid_rrf")},
            tasks=TEXT_TASKS),
    ]


def summarize_task(rankings: list[list[str]], relevant: list[set], n: int, seed: int) -> dict[str, Any]:
    values = per_query(rankings, relevant)
    return {m: dict(zip(("mean", "low", "high"), bootstrap_ci(values[m], n, seed))) for m in METRICS} | {"queries": len(rankings)}


# -- gateway side --------------------------------------------------------------------------------
def gateway_modes(chosen: Mapping[str, Any]):
    from quality.system import Mode

    one = lambda c: {x: float(x == c) for x in CHANNELS}  # noqa: E731
    return [
        Mode("image only", "multi_vector", weights=one("image")),
        Mode("title only", "multi_vector", weights=one("title")),
        Mode("caption/tags only", "multi_vector", weights=one("caption")),
        Mode("fused (default)", "fused", tasks=TASKS),  # the text mix too: the vector side of issue 13's check
        Mode("multi_vector weighted (default)", "multi_vector"),
        Mode("multi_vector rrf (default)", "multi_vector", "rrf"),
        Mode("fused, tuned request weights", "fused", weights=chosen["raw"]),
        Mode("multi_vector, tuned request weights", "multi_vector", weights=chosen["raw"]),
        # the gateway's own keyword channel (Milvus BM25 over id, title, description, brand, caption and tags): no
        # reference twin (the reference's BM25 reads title + description), so these are reported, not compared
        *gateway_keyword_modes(chosen),
    ]


def gateway_keyword_modes(chosen: Mapping[str, Any]):
    """Keyword-only and the two hybrids through the gateway, with the weights chosen on validation (text queries):
    the weighted hybrid's on the gateway's own BM25 (quality/keyword.py), the RRF hybrid's on the reference's."""
    from quality.system import Mode

    label = "calibrated" if chosen["calibrate"] else "raw"
    keyword_only = {"image": 0.0, "title": 0.0, "caption": 0.0, "keyword": 1.0}
    w = chosen["hybrid_rrf"]["keyword"]  # the reference's lists weigh 1 - w (vector) and w (keyword); the gateway normalizes
    rrf = {**{c: (1.0 - w) * v for c, v in chosen[label]["text"].items()}, "keyword": w}
    return [
        Mode(f"{GATEWAY_KEYWORD} keyword only", "multi_vector", weights=keyword_only, tasks=TEXT_TASKS),
        # the weighted hybrid as a deployment asks for it: default mode (the fused vector + the BM25 list)
        Mode(f"{GATEWAY_KEYWORD} hybrid weighted", "fused", weights=chosen["gateway_keyword"]["weights"], tasks=TEXT_TASKS),
        Mode(f"{GATEWAY_KEYWORD} hybrid RRF", "multi_vector", "rrf", weights=rrf, tasks=TEXT_TASKS),
    ]


GATEWAY_KEYWORD = "gateway BM25 channel:"


REFERENCE_OF_MODE = {"image only": "image only", "title only": "title only", "caption/tags only": "caption/tags only",
                     "fused (default)": "fused, gateway default weights", "multi_vector weighted (default)": "fused, gateway default weights",
                     "multi_vector rrf (default)": "multi-vector RRF, default weights",
                     "fused, tuned request weights": "tuned per query type", "multi_vector, tuned request weights": "tuned per query type"}


def run_gateway(cfg: EvalConfig, test: Prepared, chosen: Mapping[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    from client.sync import SearchClient
    from quality.system import Listing, index, search_all, start_gateway

    args = list(cfg.gateway_args)
    if "gateway_keyword" in chosen:  # the keyword score chosen on validation (an external gateway keeps its own)
        args += ["--keyword-pivot", str(chosen["gateway_keyword"]["pivot"]), "--keyword-exponent", str(chosen["gateway_keyword"]["exponent"])]
    proc = None if cfg.address else start_gateway(cfg.repository, cfg.workdir / "gateway", args, log)
    address = cfg.address or proc.address
    try:
        with SearchClient(address, timeout=120) as client:
            client.wait_until_serving(timeout=300)
            images = {pid: (test.folder / "images" / f"{pid}.png").read_bytes() for pid in test.ids}
            listings = [Listing(p.id, images[p.id], p.title, p.description, p.brand) for p in test.split.products]
            seconds, stored_tags = index(client, listings, log)
            agree = float(np.mean([stored_tags[pid] == tags for pid, tags in zip(test.ids, test.catalog.tags)]))
            out: dict[str, Any] = {"index_seconds": seconds, "products_per_second": len(listings) / seconds,
                                   "tag_lists_equal_to_reference": agree, "modes": {}}
            for mode in gateway_modes(chosen):
                if cfg.gateway_modes is not None and mode.name not in cfg.gateway_modes:
                    continue
                entry: dict[str, Any] = {"mode": mode.mode, "combine": mode.combine, "request_weights": mode.weights, "tasks": {}}
                for task in mode.tasks:
                    _, relevant, queries = task_scores(test, task)
                    rankings, used, ms = search_all(client, mode, queries, images, cfg.k, cfg.text_weight)
                    entry["tasks"][task] = {"rankings": rankings, "ms_per_query": ms, "weights_used": used[0] if used else None}
                log(f"[system] {mode.name}: done")
                out["modes"][mode.name] = entry
            return out
    finally:
        if proc is not None:
            proc.stop()


# -- the run -------------------------------------------------------------------------------------
def run_eval(cfg: EvalConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    from quality.datasets import fashion_mnist_arrays

    started = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    images, labels = cfg.source if cfg.source is not None else fashion_mnist_arrays("test")
    splits = build_splits(images, labels, cfg.sizes, cfg.seed, cfg.noise)
    model = ReferenceModel(cfg.repository)
    if model.has_blip:
        raise ValueError(f"{cfg.repository} has BLIP: the reference recomputes CLIP and the tags, not BLIP captions yet; "
                         "evaluate an export made with --no-blip")
    tagger = ReferenceTagger(model, per_facet=cfg.per_facet)
    val = prepare(splits["validation"], cfg.workdir / "validation", model, tagger, cfg.text_weight, log)
    test = prepare(splits["test"], cfg.workdir / "test", model, tagger, cfg.text_weight, log)
    calibration = Calibration.fit({t: stack([val.scores[k] for k in kinds]) for t, kinds in
                                   (("text", ("text", "brand_sku")), ("image", ("image",)), ("composed", ("composed",)))})
    chosen = tune(val, calibration, cfg.step, log)
    if cfg.gateway:
        chosen["gateway_keyword"] = tune_gateway_keyword(val, cfg, log)
    results: dict[str, dict[str, Any]] = {}
    reference_rankings: dict[str, dict[str, list]] = {}
    for method in methods(chosen):
        results[method.name], reference_rankings[method.name] = {}, {}
        for task in method.tasks:
            _, relevant, _ = task_scores(test, task)
            rankings = method.rankings(test, task, calibration, cfg.k)
            reference_rankings[method.name][task] = rankings
            results[method.name][task] = summarize_task(rankings, relevant, cfg.bootstrap, cfg.seed)
    log(f"[reference] methods scored on test ({time.perf_counter() - started:.0f} s so far)")
    report: dict[str, Any] = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "source"},
        "checkpoint": model.checkpoint, "arch": model.arch, "captions": "none (no BLIP in the repository)" if not model.has_blip else "BLIP",
        "splits": {name: {"products": len(p.ids), "queries": {k: len(v) for k, v in p.queries.items()}} for name, p in (("validation", val), ("test", test))},
        "title_kinds": title_kinds(test.split),
        "calibration": calibration.stats, "chosen": chosen, "reference": results,
    }
    if cfg.gateway:
        system = run_gateway(cfg, test, chosen, log)
        comparison = {}
        for name, entry in system["modes"].items():
            comparison[name] = {}
            for task, got in entry["tasks"].items():
                _, relevant, _ = task_scores(test, task)
                served = summarize_task(got["rankings"], relevant, cfg.bootstrap, cfg.seed)
                twin = REFERENCE_OF_MODE.get(name)
                reference = results[twin][task]["P@10"]["mean"] if twin else None
                comparison[name][task] = {"gateway": served, "reference": reference,
                                          "abs_diff_P@10": abs(served["P@10"]["mean"] - reference) if twin else None,
                                          "ms_per_query": got["ms_per_query"], "weights_used": got["weights_used"]}
        report["gateway"] = {k: v for k, v in system.items() if k != "modes"} | {"modes": comparison}
    report["targets"] = targets(report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["tables"] = tables(report)
    (cfg.out / "eval.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (cfg.out / "eval.md").write_text(report["tables"] + "\n")
    plot(report, cfg.out / "eval.png")
    return report


def title_kinds(split: EvalSplit) -> dict[str, int]:
    return {"empty title": sum(1 for p in split.products if not p.title),
            "no title and no description (no title channel)": sum(1 for p in split.products if not p.title and not p.description),
            "with brand + SKU": sum(1 for p in split.products if p.sku)}


def targets(report: Mapping[str, Any]) -> dict[str, Any]:
    """Issue 11's 'Done when' checks on test, from the reference figures (and the gateway comparison)."""
    ref = report["reference"]
    shipped = next(n for n in ref if n.startswith("SHIPPED"))
    out: dict[str, Any] = {}
    for task in ("text->image", "image->image", "composed"):
        singles = {n: ref[n][task]["P@10"] for n in ("image only", "title only", "caption/tags only")}
        best = max(singles, key=lambda n: singles[n]["mean"])
        d = ref[shipped][task]["P@10"]
        out[task] = {"shipped": d, "best single": best, "best single P@10": singles[best],
                     "not worse (shipped high >= best mean)": d["high"] >= singles[best]["mean"],
                     "strictly better (intervals apart)": d["low"] > singles[best]["high"]}
    bm25 = ref["BM25 title+description"]["text->image"]["P@10"]["mean"]
    out["text->image beats BM25 by >= 0.10"] = {"shipped": ref[shipped]["text->image"]["P@10"]["mean"], "bm25": bm25,
                                               "met": ref[shipped]["text->image"]["P@10"]["mean"] - bm25 >= 0.10}
    v, kw = ref[shipped], ref["BM25 title+description"]
    for name in ("hybrid: shipped + BM25 keyword (text)", "hybrid RRF: shipped list + BM25 list (text)"):
        h = ref[name]
        out[f"issue 13: {name}"] = {task: hybrid_check(h[task]["nDCG@10"], v[task]["nDCG@10"], kw[task]["nDCG@10"]) for task in TEXT_TASKS}
    if "gateway" in report:
        modes = report["gateway"]["modes"]
        diffs = {m: max(t["abs_diff_P@10"] for t in tasks.values()) for m, tasks in modes.items() if m in REFERENCE_OF_MODE}
        out["gateway vs reference |P@10 diff| <= 0.005"] = {"worst per mode": diffs, "met": all(d <= 0.005 for d in diffs.values())}
        names = [m.name for m in gateway_keyword_modes(report["chosen"])]
        if all(n in modes for n in names) and "fused (default)" in modes:
            served = lambda mode, task: modes[mode][task]["gateway"]["nDCG@10"]  # noqa: E731
            for name in names[1:]:  # names[0] is the keyword channel alone
                out[f"issue 13 through the gateway: {name}"] = {
                    task: hybrid_check(served(name, task), served("fused (default)", task), served(names[0], task))
                    for task in TEXT_TASKS if task in modes[name] and task in modes["fused (default)"]}
    return out


def hybrid_check(hybrid: Mapping[str, float], vector: Mapping[str, float], keyword: Mapping[str, float]) -> dict[str, Any]:
    """Issue 13's target on one query set, from nDCG@10 summaries (mean, low, high)."""
    return {"hybrid": hybrid, "vector": vector, "keyword": keyword,
            "at least the better within its interval": hybrid["high"] >= max(vector["mean"], keyword["mean"]),
            "strictly better than both": hybrid["low"] > max(vector["high"], keyword["high"])}


def _ci(x: Mapping[str, float]) -> str:
    return f"{x['mean']:.3f} [{x['low']:.3f}, {x['high']:.3f}]"


def tables(report: Mapping[str, Any]) -> str:
    lines = ["### Reference on the test split (P@10 / R@10 / nDCG@10, 95% bootstrap intervals)", ""]
    for task in TASKS:
        lines += [f"**{task}**", "", "| method | P@10 | R@10 | nDCG@10 |", "|---|---|---|---|"]
        for name, tasks in report["reference"].items():
            if task in tasks:
                r = tasks[task]
                lines.append(f"| {name} | {_ci(r['P@10'])} | {_ci(r['R@10'])} | {_ci(r['nDCG@10'])} |")
        lines.append("")
    if "gateway" in report:
        g = report["gateway"]
        lines += ["### Gateway + Milvus Lite vs the reference (test split, P@10)", "",
                  f"Indexed {report['splits']['test']['products']} products in {g['index_seconds']:.1f} s "
                  f"({g['products_per_second']:.0f}/s); stored tag lists equal to the reference tagger's: {g['tag_lists_equal_to_reference']:.3f}.", "",
                  "| gateway mode | task | P@10 gateway | P@10 reference | abs diff | ms/query | weights the gateway reported |", "|---|---|---|---|---|---|---|"]
        keyword_modes = {}
        for mode, tasks in g["modes"].items():
            if mode not in REFERENCE_OF_MODE:
                keyword_modes[mode] = tasks
                continue
            for task, t in tasks.items():
                lines.append(f"| {mode} | {task} | {t['gateway']['P@10']['mean']:.3f} | {t['reference']:.3f} | {t['abs_diff_P@10']:.3f} | "
                             f"{t['ms_per_query']:.1f} | {t['weights_used']} |")
        lines.append("")
        if keyword_modes:
            lines += ["### The gateway's keyword channel (Milvus BM25 over id, title, description, brand, caption, tags; test split, "
                      "nDCG@10 with 95% intervals; no reference twin)", "",
                      "| gateway mode | task | P@10 | nDCG@10 | ms/query | weights the gateway reported |", "|---|---|---|---|---|---|"]
            tuned = report["chosen"].get("gateway_keyword")
            if tuned:
                v = tuned["validation nDCG@10"]
                lines[-2:-2] = [f"Keyword score chosen on validation (Milvus BM25 of the validation catalog): pivot {tuned['pivot']:g}, "
                                f"exponent {tuned['exponent']:g}, hybrid keyword weight {tuned['keyword_weight']:g} (validation nDCG@10 "
                                f"semantic {v['text']:.3f}, brand/SKU {v['brand_sku']:.3f}, mix {v['text mix']:.3f}).", ""]
            for mode, tasks in keyword_modes.items():
                for task, t in tasks.items():
                    lines.append(f"| {mode} | {task} | {_ci(t['gateway']['P@10'])} | {_ci(t['gateway']['nDCG@10'])} | "
                                 f"{t['ms_per_query']:.1f} | {t['weights_used']} |")
            lines.append("")
    return "\n".join(lines)


def plot(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = ("text->image", "image->image", "composed", "brand/SKU")
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        metric = "nDCG@10" if task == "brand/SKU" else "P@10"
        names = [n for n, t in report["reference"].items() if task in t]
        values = [report["reference"][n][task][metric] for n in names]
        y = np.arange(len(names))
        ax.barh(y, [v["mean"] for v in values], xerr=[[v["mean"] - v["low"] for v in values], [v["high"] - v["mean"] for v in values]],
                color=["tab:red" if n.startswith("SHIPPED") else "tab:blue" for n in names], alpha=0.8, capsize=2)
        ax.set_yticks(y, names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_title(f"{task} ({metric}, test)")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
