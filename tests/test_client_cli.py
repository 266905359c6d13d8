"""The CLI as a user drives it: subprocesses against a real gateway (tiny models) on real Milvus Lite.

Covers: index with a progress summary and a failure file, interrupt (SIGINT) and resume without
duplicates or re-sending, search with filters (table and JSON), describe/get/delete/embed, and a
bounded load test whose JSON report adds up. Load goes only to the gateway on 127.0.0.1.
"""
from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client_fixtures import ROOT, cli_env, client_gateway, free_port, run_cli, sample_catalog, start_gateway, stop_gateway  # noqa: F401



def _rows(catalog: Path) -> list[dict]:
    return [json.loads(line) for line in catalog.read_text().splitlines() if line.strip()]


def _copy_catalog(src: Path, dst: Path, prefix: str, extra: list[dict] = (), category_prefix: str = "") -> Path:
    """The sample catalog under new ids (each test owns its products), plus extra rows."""
    dst.mkdir(parents=True, exist_ok=True)
    rows = []
    for row in _rows(src):
        row = dict(row, id=f"{prefix}{row['id']}", image=str(src.parent / row["image"]), category=category_prefix + row["category"])
        rows.append(row)
    rows.extend(extra)
    catalog = dst / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return catalog


@pytest.fixture(scope="module")
def indexed(client_gateway, sample_catalog, tmp_path_factory):
    """The sample catalog indexed once (plus one bad row), shared by the search tests."""
    work = tmp_path_factory.mktemp("indexed")
    catalog = _copy_catalog(sample_catalog, work, "s-", extra=[{"id": "bad-1", "image": "missing.png", "title": "ghost"}])
    result = run_cli("index", str(catalog), "--json", "--batch-size", "8", address=client_gateway.address)
    return catalog, result


def test_help_on_every_subcommand():
    for command in ([], ["index"], ["search"], ["describe"], ["get"], ["delete"], ["embed"], ["load"], ["health"]):
        result = run_cli(*command, "--help")
        assert result.returncode == 0 and "usage: mmsearch" in result.stdout, command


def test_index_summary_and_failure_file(indexed, client_gateway):
    catalog, result = indexed
    assert result.returncode == 1, result.stderr  # one bad row
    summary = json.loads(result.stdout)
    products = len(_rows(catalog)) - 1
    assert summary["ok"] == products and summary["failed"] == 1 and summary["skipped"] == 0
    assert summary["ok"] + summary["failed"] + summary["skipped"] + summary["not_sent"] == summary["total"]
    assert any("image file not found" in reason for reason in summary["failure_reasons"])
    failed = [json.loads(line) for line in Path(summary["failed_file"]).read_text().splitlines()]
    assert [f["id"] for f in failed] == ["bad-1"] and failed[0]["row"]["title"] == "ghost"
    assert "row/s" in result.stderr or "it/s" in result.stderr or "row" in result.stderr  # the progress bar
    ids = [r["id"] for r in _rows(catalog)[:-1]]
    got = run_cli("get", *ids, "--json", address=client_gateway.address, check=True)
    stored = json.loads(got.stdout)
    assert sorted(p["product"]["id"] for p in stored["products"]) == sorted(ids)


def test_index_human_summary_and_nothing_to_do(indexed, client_gateway):
    catalog, _ = indexed
    again = run_cli("index", str(catalog), "--no-progress", address=client_gateway.address)
    assert f"skipped {len(_rows(catalog)) - 1} already indexed" in again.stdout
    assert "ok 0, failed 1" in again.stdout and "failed rows written to" in again.stdout


def test_interrupt_and_resume_without_duplicates(client_gateway, sample_catalog, tmp_path):
    catalog = _copy_catalog(sample_catalog, tmp_path, "r-", category_prefix="resume-")
    total = len(_rows(catalog))
    state = tmp_path / "state.jsonl"
    command = [sys.executable, "-m", "client", "index", str(catalog), "--address", client_gateway.address, "--json",
               "--state", str(state), "--batch-size", "4", "--concurrency", "1", "--max-rate", "12"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # interrupt once two batches are acknowledged
        if state.exists() and len(state.read_text().splitlines()) >= 1 + 8:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert out.strip(), err
    first = json.loads(out)
    assert first["interrupted"] and 8 <= first["ok"] < total and first["failed"] == 0
    acknowledged = [json.loads(line)["id"] for line in state.read_text().splitlines()[1:]]
    assert len(acknowledged) == first["ok"] == len(set(acknowledged))

    second = run_cli("index", str(catalog), "--json", "--state", str(state), address=client_gateway.address, check=True)
    resumed = json.loads(second.stdout)
    assert resumed["skipped"] == first["ok"] and resumed["ok"] == total - first["ok"] and not resumed["interrupted"]
    human = run_cli("index", str(catalog), "--state", str(state), "--no-progress", address=client_gateway.address, check=True)
    assert f"skipped {total} already indexed" in human.stdout

    ids = [r["id"] for r in _rows(catalog)]
    stored = json.loads(run_cli("get", *ids, "--json", address=client_gateway.address, check=True).stdout)
    assert [p["product"]["id"] for p in stored["products"]] == ids and not stored.get("not_found")
    hits = json.loads(run_cli("search", "product", *sum([["--id", i] for i in ids], []), "--top-k", str(total + 5),
                              "--json", address=client_gateway.address, check=True).stdout).get("hits", [])
    found = [h["product"]["id"] for h in hits]
    assert sorted(found) == sorted(ids), "each product exactly once"


def test_search_with_filters_table_and_json(indexed, client_gateway):
    catalog, _ = indexed
    rows = _rows(catalog)[:-1]
    category = rows[0]["category"]
    cap = sorted(r["price"] for r in rows if r["category"] == category)[-1]
    expected = {r["id"] for r in rows if r["category"] == category and r["price"] <= cap}
    result = run_cli("search", "leather", "--category", category, "--price-max", str(cap), "--top-k", "50", "--json",
                     address=client_gateway.address, check=True)
    hits = json.loads(result.stdout)["hits"]
    assert {h["product"]["id"] for h in hits} == expected
    assert all(h["product"]["category"] == category and h["product"]["price"] <= cap for h in hits)
    assert all(set(h["channel_scores"]) >= {"image", "title", "caption"} for h in hits)

    image = rows[1]["image"]
    table = run_cli("search", "in red", "--image", image, "--top-k", "3", "--weights", "image=0.6,title=0.3,caption=0.1",
                    address=client_gateway.address, check=True).stdout
    lines = table.splitlines()
    assert lines[0].startswith("composed query 'in red' + image") and "3 hits" in lines[0]
    assert lines[1].split()[:3] == ["#", "id", "title"] and len(lines) == 3 + 3
    by_image = json.loads(run_cli("search", "--image", image, "--top-k", "10", "--mode", "multi_vector", "--weights", "1,0,0",
                                  "--json", address=client_gateway.address, check=True).stdout)
    # A catalog photo finds itself at cosine 1; other tests index copies of the same photos under
    # other ids into this gateway, and those tie with it, so look among the top-scoring hits.
    best = by_image["hits"][0]["score"]
    assert best >= 0.999
    assert rows[1]["id"] in {h["product"]["id"] for h in by_image["hits"] if h["score"] >= best - 1e-4}

    bad = run_cli("search", "x", "--attr", "no_such_key=1", address=client_gateway.address)
    assert bad.returncode == 2 and "INVALID_ARGUMENT" in bad.stderr and "Traceback" not in bad.stderr


def test_describe_get_delete_embed(indexed, client_gateway, tmp_path):
    catalog, _ = indexed
    rows = _rows(catalog)
    described = json.loads(run_cli("describe", rows[0]["image"], "--json", address=client_gateway.address, check=True).stdout)
    assert "caption" in described or "tags" in described
    embedded = json.loads(run_cli("embed", "--text", "red boots", "--image", rows[0]["image"], "--json",
                                  address=client_gateway.address, check=True).stdout)
    assert [v["kind"] for v in embedded["vectors"]] == ["text", "image"]
    assert all(len(v["vector"]) == embedded["dim"] for v in embedded["vectors"])
    victim = rows[2]["id"]
    assert "deleted 1" in run_cli("delete", victim, address=client_gateway.address, check=True).stdout
    gone = run_cli("get", victim, address=client_gateway.address)
    assert gone.returncode == 1 and f"not found: {victim}" in gone.stdout


def test_load_report_counts_add_up(indexed, client_gateway, tmp_path):
    catalog, _ = indexed
    report_csv = tmp_path / "load.csv"
    result = run_cli("load", "--concurrency", "1", "4", "--duration", "1.5", "--requests", "150", "--warmup", "0.5",
                     "--catalog", str(catalog), "--mix", "text=0.4,image=0.3,composed=0.2,upsert=0.1",
                     "--json", "-", "--csv", str(report_csv), "--channels", "2", address=client_gateway.address, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["address"] == client_gateway.address
    assert [s["concurrency"] for s in report["steps"]] == [1, 4]
    for step in report["steps"]:
        assert step["ok"] + step["errors"] == step["sent"] <= 150 and step["ok"] > 0
        assert step["qps"] == pytest.approx(step["ok"] / step["seconds"], rel=1e-3)
        assert sum(k["sent"] for k in step["by_kind"].values()) == step["sent"]
        lat = step["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert "c=1" in result.stderr and "p99 ms" in result.stderr  # the table
    assert len(list(csv.reader(report_csv.open()))) == 1 + 2
    leftovers = json.loads(run_cli("search", "x", "--category", "loadgen", "--json", address=client_gateway.address, check=True).stdout)
    assert not leftovers.get("hits"), "upserts of the load test are deleted afterwards"


def test_load_rate_mode_bounded_by_requests(client_gateway):
    started = time.monotonic()
    result = run_cli("load", "--rate", "40", "--requests", "30", "--duration", "5", "--warmup", "0", "--mix", "text=1",
                     "--json", "-", address=client_gateway.address, timeout=60)
    assert result.returncode == 0, result.stderr
    step = json.loads(result.stdout)["steps"][0]
    assert step["sent"] == 30 and step["ok"] + step["errors"] == 30 and step["rate"] == 40
    assert time.monotonic() - started < 30


def test_index_csv_and_image_folder(client_gateway, sample_catalog, tmp_path):
    rows = _rows(sample_catalog)[:5]
    csv_catalog = tmp_path / "shop.csv"
    with csv_catalog.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sku", "image", "title", "price", "category", "colour"])
        for row in rows:
            writer.writerow([f"csv-{row['id']}", str(sample_catalog.parent / row["image"]), row["title"], row["price"], "csvcat", "red"])
    result = run_cli("index", str(csv_catalog), "--json", address=client_gateway.address, check=True)
    assert json.loads(result.stdout)["ok"] == 5
    stored = json.loads(run_cli("get", f"csv-{rows[0]['id']}", "--json", address=client_gateway.address, check=True).stdout)
    assert stored["products"][0]["product"]["attributes"] == {"colour": "red"}

    folder = tmp_path / "photos" / "bags"
    folder.mkdir(parents=True)
    for row in rows[:3]:
        shutil.copy(sample_catalog.parent / row["image"], folder / Path(row["image"]).name)
    result = run_cli("index", str(tmp_path / "photos"), "--json", address=client_gateway.address, check=True)
    summary = json.loads(result.stdout)
    assert summary["ok"] == 3 and summary["state_file"].endswith("photos/.index-state")
    hits = json.loads(run_cli("search", "bag", "--category", "bags", "--json", address=client_gateway.address, check=True).stdout)["hits"]
    assert len(hits) == 3


def test_gateway_going_away_stops_index_and_a_restart_resumes(tiny_repository, sample_catalog, tmp_path):
    """The gateway stops mid-index: index stops early (not failing every row), and resumes on a restarted gateway."""
    catalog = _copy_catalog(sample_catalog, tmp_path / "catalog", "g-")
    total = len(_rows(catalog))
    port = free_port()
    gateway = start_gateway(tiny_repository, tmp_path / "gw", port)
    try:
        command = [sys.executable, "-m", "client", "index", str(catalog), "--address", gateway.address, "--json",
                   "--batch-size", "4", "--concurrency", "1", "--max-rate", "10", "--retries", "2", "--no-progress"]
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
        state = Path(str(catalog) + ".index-state")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (state.exists() and len(state.read_text().splitlines()) > 8):
            time.sleep(0.05)
        stop_gateway(gateway)
        out, err = process.communicate(timeout=60)
    finally:
        stop_gateway(gateway)
    assert process.returncode == 1, err
    first = json.loads(out)
    assert first["stopped"].startswith("gateway unavailable") and not first["interrupted"]
    assert 8 <= first["ok"] < total and first["failed"] <= 4 and first["not_sent"] > 0

    gateway = start_gateway(tiny_repository, tmp_path / "gw", port)  # same Milvus Lite file
    try:
        second = json.loads(run_cli("index", str(catalog), "--json", address=gateway.address, check=True).stdout)
        assert second["skipped"] == first["ok"] and second["ok"] == total - first["ok"]
        ids = [r["id"] for r in _rows(catalog)]
        stored = json.loads(run_cli("get", *ids, "--json", address=gateway.address, check=True).stdout)
        assert [p["product"]["id"] for p in stored["products"]] == ids
    finally:
        stop_gateway(gateway)
