"""The benchmark runner on a tiny synthetic dataset: fields, files, n/a handling."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from tqsearch import bench, datasets
from tqsearch.competitors import FaissMethod, TurbovecMethod, Unavailable, faiss_factories

N, NQ, D = 1200, 30, 24


def _tiny(metric="cosine", d=D, with_gt=True):
    rng = np.random.default_rng(11)
    centers = rng.standard_normal((15, d))
    x = centers[rng.integers(0, 15, N + NQ)] + 0.6 * rng.standard_normal((N + NQ, d))
    x = x.astype(np.float32)
    train, test = x[:N], x[N:]
    gt = datasets.ground_truth(train, test, 10, metric)[1] if with_gt else None
    return SimpleNamespace(name=f"tiny-{metric}", train=train, test=test, neighbors=gt,
                           metric=metric)


def test_recall_definitions():
    gt = np.array([[1, 2, 3], [4, 5, 6]])
    ids = np.array([[3, 9, 1], [7, 8, -1]])
    assert bench.recall_at_k(ids, gt, 3) == pytest.approx(2 / 6)
    assert bench.recall_1_at_k(ids, gt, 3) == pytest.approx(0.5)
    # -1 padding never counts, even against a -1 in the truth
    assert bench.recall_at_k(np.array([[-1, -1]]), np.array([[-1, 0]]), 2) == 0.0


def test_factories_equal_bytes():
    f = faiss_factories(50, 4)
    assert f["sqtqmse"] == "RR50,SQtqmse4"
    assert f["pq4fs"] == "PQ50x4fs" and f["pq8"] == "PQ25x8"
    assert faiss_factories(50, 2)["pq8"].startswith("n/a")  # 12.5 sub-quantizers
    assert faiss_factories(384, 3)["pq4fs"].startswith("n/a")  # 288 does not divide 384
    m = FaissMethod(50, 4, "cosine", f["sqtqmse"], "sqtqmse")
    assert m.bytes_per_vector == 50 * 4 / 8
    with pytest.raises(Unavailable, match="rejects"):
        FaissMethod(50, 4, "ip", "NoSuchIndex7", "x")


def test_turbovec_refusals():
    pytest.importorskip("turbovec")
    with pytest.raises(Unavailable, match="inner product"):
        TurbovecMethod(64, 4, "l2")
    with pytest.raises(Unavailable, match="d = 50"):
        TurbovecMethod(50, 4, "cosine")
    with pytest.raises(Unavailable, match="2, 3 or 4"):
        TurbovecMethod(64, 1, "ip")


def test_run_writes_sane_results(tmp_path):
    ds = _tiny()
    families = ["tqsearch", "tqsearch-rerank", "eden", "pq4fs", "turbovec"]
    config = bench.BenchConfig(bits=(3, 4), threads=(1, "all"), families=families,
                               n_queries=NQ, n_latency=20)
    result = bench.run_dataset(ds, config, log=None)
    meta, rows = result["meta"], result["rows"]
    assert meta["n_train"] == N and meta["d"] == D and meta["n_queries"] == NQ
    assert set(meta["threads"]) == {"1", "all"}

    by = {(r["family"], r["bits"]): r for r in rows}
    # rerank only at 4 bits; PQ x4fs at 3 bits needs 18 sub-quantizers, which do not divide 24
    assert ("tqsearch-rerank", 3) not in by
    assert by[("pq4fs", 3)]["status"] == "n/a" and "divide" in by[("pq4fs", 3)]["reason"]
    for bits in (3, 4):
        tq = by[("tqsearch", bits)]
        assert tq["status"] == "ok", tq
        assert tq["ratio_1"] == pytest.approx(1.0)
        eden = by[("eden", bits)]
        assert eden["method"] == f"EDEN{bits}"
        assert eden["ratio_1"] == pytest.approx(eden["qps_1"] / tq["qps_1"])
    ok = [r for r in rows if r["status"] == "ok"]
    for r in ok:
        assert 0.0 <= r["recall"] <= 1.0 and 0.0 <= r["recall_1"] <= 1.0
        assert r["recall_1"] >= r["recall"] - 0.2
        assert r["qps_1"] > 0 and r["qps_all"] > 0 and r["latency_ms"] > 0
        assert r["build_s"] >= 0 and r["bytes_per_vector"] > 0
    assert by[("tqsearch", 4)]["recall"] > 0.6
    # exact re-scoring of 100 candidates out of 1,200 recovers the true top-10
    rr = by[("tqsearch-rerank", 4)]
    assert rr["recall"] > 0.97
    assert rr["bytes_per_vector"] == by[("tqsearch", 4)]["bytes_per_vector"] + 4 * D
    assert by[("pq4fs", 4)]["bytes_per_vector"] == D * 4 / 8

    paths = bench.write_results(result, tmp_path / "out")
    loaded = json.loads(open(paths["json"]).read())
    assert loaded["rows"] == json.loads(json.dumps(rows))
    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    assert {"method", "bits", "recall", "qps_1", "qps_all", "latency_ms", "ratio_1"} <= set(
        table[0])
    png = open(paths["png"], "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    md = open(paths["md"]).read()
    assert md.count("\n|") >= len(rows) + 1 and "EDEN4" in md

    text = bench.format_table(result)
    assert "EDEN3" in text and "n/a:" in text
    widths = {len(line) for line in text.splitlines()[1:] if "n/a" not in line}
    assert len(widths) == 1  # aligned columns


def test_ground_truth_computed_when_absent():
    ds = _tiny(metric="l2", with_gt=False)
    config = bench.BenchConfig(bits=(4,), threads=(1,), families=["tqsearch", "turbovec"],
                               n_queries=NQ, n_latency=5)
    result = bench.run_dataset(ds, config, log=None)
    rows = {r["family"]: r for r in result["rows"]}
    assert rows["tqsearch"]["recall"] > 0.5
    assert rows["turbovec"]["status"] == "n/a"  # inner product only, or not installed


def test_config_validation():
    with pytest.raises(ValueError, match="unknown method families"):
        bench.BenchConfig(families=["nope"]).selected_families()
    with pytest.raises(ValueError, match="thread"):
        bench.BenchConfig(threads=(0,)).thread_counts()
    quick = bench.BenchConfig(quick=True).selected_families()
    assert "pq8" not in quick and "tqsearch" in quick and "pq4fs" in quick


def test_cli_bench(tmp_path):
    from cli import main

    ds = _tiny()
    dist, nb = datasets.ground_truth(ds.train, ds.test, 10, "angular")
    path = tmp_path / "tiny-24-angular.hdf5"
    datasets.write_dataset(path, ds.train, ds.test, nb, dist, "angular")
    out = tmp_path / "bench"
    r = CliRunner().invoke(main, ["bench", str(path), "--bits", "4", "--threads", "1",
                                  "--methods", "tqsearch,sqtqmse", "--queries", "20",
                                  "--out", str(out), "--no-plot"])
    assert r.exit_code == 0, r.output
    assert "RR24,SQtqmse4" in r.output and "tqsearch" in r.output
    assert (out / "tiny-24-angular" / "results.json").exists()
    assert not (out / "tiny-24-angular" / "recall_qps.png").exists()
