"""The stand-alone benchmark scripts' own computations (bench/*.py, not the package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from tqsearch import datasets
from tqsearch.codec import TurboQuantCodec

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _script(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _clustered(n, nq, d, seed=3):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((20, d))
    x = centers[rng.integers(0, 20, n + nq)] + 0.5 * rng.standard_normal((n + nq, d))
    x = x.astype(np.float32)
    return x[:n], x[n:]


def test_widened_copies_keep_inner_products_and_neighbours(tmp_path, monkeypatch):
    widen = _script("widen_dataset")
    train, test = _clustered(600, 12, 16)
    src, out = tmp_path / "src.hdf5", tmp_path / "wide.hdf5"
    distances, neighbors = datasets.ground_truth(train, test, 10, "euclidean")
    datasets.write_dataset(src, train, test, neighbors, distances, "euclidean")
    monkeypatch.setattr(sys, "argv", ["widen", str(src), str(out), "--copies", "3"])
    widen.main()
    wide = datasets.load_dataset(out)
    assert wide.train.shape == (600, 48)
    np.testing.assert_allclose(wide.train @ wide.test.T, train @ test.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(wide.neighbors, neighbors)


def test_sign_pass_kappa_matches_the_codes():
    rates = _script("sign_pass_rates")
    d = 256
    codec = TurboQuantCodec.create(d, 4, "ip", False, "hadamard", "corrected", 0)
    x = np.random.default_rng(0).standard_normal((2000, d)).astype(np.float32)
    c = codec.centroids[codec.indices(codec.encode(x).codes)].astype(np.float64)
    measured = np.sqrt(1 - np.abs(c).mean(1) ** 2 / (c ** 2).mean(1))
    assert rates.codebook_kappa(codec) == pytest.approx(measured.mean(), rel=0.02)


def test_sign_pass_simulation_reads_fewer_with_a_smaller_margin():
    rates = _script("sign_pass_rates")
    train, test = _clustered(1500, 6, 64)
    n, rows = rates.simulate(train, test, "cosine", 4, 5, [0.0, 4.0, 1e6])
    assert n == 1500
    reads = [read for _, read, _ in rows]
    assert reads[0] <= reads[1] <= reads[2] == n  # an infinite margin reads everything
    assert rows[2][2] == 0  # and loses nothing


def test_query_bench_on_the_first_vectors_recomputes_the_neighbours(capsys):
    bench = _script("bench_query")
    sample = Path(__file__).resolve().parents[1] / "datasets" / "wordnet-minilm-384-angular-4k.hdf5"
    bench.main([str(sample), "--bits", "4", "--limit", "400", "--nq", "20", "--latency", "5",
                "--repeat", "1"])
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines()
            if "(first 400)" in line]
    assert {row[3].strip() for row in rows} >= {"tqsearch", "PQ384x4fs"}
    recall = {row[3].strip(): float(row[9]) for row in rows}
    # against the neighbours among the first 400 (the file's are among all 4,000,
    # most of them not indexed here): 4-bit codes find nearly all of them
    assert recall["tqsearch"] > 0.8


def test_row_codes_bench_reports_every_method(capsys):
    bench = _script("bench_rows")
    sample = Path(__file__).resolve().parents[1] / "datasets" / "wordnet-minilm-384-angular-4k.hdf5"
    bench.main([str(sample), "--nq", "20", "--latency", "3", "--repeat", "1"])
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| wordnet")]
    recall = {row[2].strip(): float(row[6]) for row in rows}
    assert set(recall) == {"tqsearch 5 bits", "tqsearch 6 bits", "FAISS SQ6", "tqsearch 8 bits",
                           "FAISS SQ8", "tqsearch qjl 3 bits", "tqsearch qjl 4 bits"}
    assert recall["tqsearch 8 bits"] > 0.9 and recall["FAISS SQ8"] > 0.9


def test_gaussian_dataset_has_exact_angular_neighbours(tmp_path, monkeypatch):
    gaussian = _script("random_dataset")
    out = tmp_path / "random.hdf5"
    monkeypatch.setattr(sys, "argv", ["random", str(out), "--n", "500", "--d", "12",
                                      "--queries", "7", "--seed", "5"])
    gaussian.main()
    ds = datasets.load_dataset(out)
    assert ds.train.shape == (500, 12) and ds.test.shape == (7, 12)
    assert ds.distance == "angular" and ds.neighbors.shape == (7, 100)
    unit = ds.train / np.linalg.norm(ds.train, axis=1, keepdims=True)
    cos = (ds.test / np.linalg.norm(ds.test, axis=1, keepdims=True)) @ unit.T
    np.testing.assert_array_equal(ds.neighbors[:, :10], np.argsort(-cos, axis=1)[:, :10])
    train, test = gaussian.gaussian_dataset(500, 12, 7, 5)
    np.testing.assert_array_equal(train, ds.train)
