"""The command line: build / query / info round trips and one-line errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

import tqsearch
from cli import main
from tqsearch import datasets

N, NQ, D, K = 1500, 40, 32, 10


def _recall(ids, gt, k=K):
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(ids, gt, strict=False)]))


@pytest.fixture(scope="module")
def ann_file(tmp_path_factory):
    """A small angular ann-benchmarks file with exact neighbours."""
    rng = np.random.default_rng(7)
    centers = rng.standard_normal((20, D))
    x = centers[rng.integers(0, 20, N + NQ)] + 0.7 * rng.standard_normal((N + NQ, D))
    x = x.astype(np.float32)
    train, test = x[:N], x[N:]
    dist, nb = datasets.ground_truth(train, test, 50, "angular")
    path = tmp_path_factory.mktemp("data") / "tiny-32-angular.hdf5"
    datasets.write_dataset(path, train, test, nb, dist, "angular")
    return path


@pytest.fixture()
def runner():
    return CliRunner()


def _run(runner, args):
    return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def _assert_one_line_error(result, *needles):
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_version_and_help(runner):
    r = _run(runner, ["--version"])
    assert r.exit_code == 0
    assert tqsearch.__version__ in r.output
    r = _run(runner, ["--help"])
    assert r.exit_code == 0
    for command in ("build", "query", "info", "bench", "datasets"):
        assert command in r.output
    for command in ("build", "query", "info", "bench"):
        assert _run(runner, [command, "--help"]).exit_code == 0


def test_build_query_matches_python_api(runner, ann_file, tmp_path):
    index_path = tmp_path / "tiny.tqs"
    r = _run(runner, ["build", ann_file, "-o", index_path, "--bits", "3"])
    assert r.exit_code == 0, r.output
    assert index_path.exists()

    out = tmp_path / "ids.npy"
    r = _run(runner, ["query", index_path, ann_file, "-k", K, "-o", out])
    assert r.exit_code == 0, r.output
    ids_cli = np.load(out)
    assert ids_cli.shape == (NQ, K)

    ds = datasets.load_dataset(ann_file)
    assert ds.metric == "cosine"  # the metric came from the file's attribute
    index = tqsearch.TurboQuantIndex(D, 3, metric="cosine")
    index.add(ds.train)
    _, ids_api = index.search(ds.test, K)
    recall_cli = _recall(ids_cli, ds.neighbors)
    assert recall_cli == _recall(ids_api, ds.neighbors)
    np.testing.assert_array_equal(ids_cli, ids_api)
    assert recall_cli > 0.6  # 3 bits on clustered 32-d data

    # the same results as JSON on stdout, and as CSV
    r = _run(runner, ["query", index_path, ann_file, "-k", 3, "--json"])
    assert r.exit_code == 0
    payload = json.loads(r.output)
    np.testing.assert_array_equal(np.array(payload["ids"]), ids_api[:, :3])
    csv_path = tmp_path / "res.csv"
    assert _run(runner, ["query", index_path, ann_file, "-k", 2, "-o", csv_path]).exit_code == 0
    rows = csv_path.read_text().splitlines()
    assert rows[0] == "query,rank,id,score" and len(rows) == 1 + 2 * NQ
    assert rows[1].split(",")[2] == str(ids_api[0, 0])


def test_table_output_and_rerank(runner, ann_file, tmp_path):
    index_path = tmp_path / "kept.tqs"
    r = _run(runner, ["build", ann_file, "-o", index_path, "--bits", "2", "--keep-vectors",
                      "--metric", "cosine", "--seed", "3"])
    assert r.exit_code == 0, r.output
    r = _run(runner, ["query", index_path, ann_file, "-k", 5, "--rerank", 4])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0].split("\t") == ["query", "rank", "id", "score"]
    assert len(lines) == 1 + NQ * 5
    ids = np.array([int(line.split("\t")[2]) for line in lines[1:]]).reshape(NQ, 5)
    ds = datasets.load_dataset(ann_file)
    # exact re-scoring of 20 candidates finds most true top-5
    assert _recall(ids, ds.neighbors, 5) > 0.8


def test_info_fields(runner, ann_file, tmp_path):
    index_path = tmp_path / "info.tqs"
    assert _run(runner, ["build", ann_file, "-o", index_path, "--bits", "4",
                         "--rotation", "dense"]).exit_code == 0
    r = _run(runner, ["info", index_path])
    assert r.exit_code == 0, r.output
    fields = dict(line.split(":", 1) for line in r.output.strip().splitlines())
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    assert fields["dimension"] == str(D)
    assert fields["bits"] == "4"
    assert fields["metric"] == "cosine"
    assert fields["vectors"] == f"{N:,}"
    assert fields["rotation"].startswith("dense")
    assert fields["estimator"].startswith("corrected")
    index = tqsearch.read_index(index_path)
    assert fields["bytes per vector"].startswith(str(index.code_size))
    assert f"{os.path.getsize(index_path):,} bytes" in fields["file size"]


def test_build_from_npy_and_fvecs(runner, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rows = np.hstack([np.full((300, 1), 16, dtype=np.int32).view(np.float32), x])
    rows.astype("<f4").tofile(tmp_path / "x.fvecs")
    for name in ("x.npy", "x.fvecs"):
        out = tmp_path / f"{name}.tqs"
        r = _run(runner, ["build", tmp_path / name, "-o", out, "--metric", "l2"])
        assert r.exit_code == 0, r.output
        index = tqsearch.read_index(out)
        assert (index.ntotal, index.d, index.metric) == (300, 16, "l2")
    # default metric for non-HDF5 input is ip
    r = _run(runner, ["build", tmp_path / "x.npy", "-o", tmp_path / "ip.tqs"])
    assert r.exit_code == 0
    assert tqsearch.read_index(tmp_path / "ip.tqs").metric == "ip"


def test_errors_are_one_line(runner, ann_file, tmp_path):
    bad_h5 = tmp_path / "text.hdf5"
    bad_h5.write_text("not an hdf5 file\n")
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros(8, dtype=np.float32))
    q12 = tmp_path / "q12.npy"
    np.save(q12, np.ones((3, 12), dtype=np.float32))
    index_path = tmp_path / "ok.tqs"
    assert _run(runner, ["build", ann_file, "-o", index_path]).exit_code == 0

    cases = [
        (["build", tmp_path / "missing.hdf5", "-o", tmp_path / "a.tqs"], ["missing.hdf5"]),
        (["build", bad_h5, "-o", tmp_path / "a.tqs"], ["text.hdf5", "HDF5"]),
        (["build", flat, "-o", tmp_path / "a.tqs"], ["flat.npy", "2-D"]),
        (["build", ann_file, "-o", tmp_path / "no" / "dir" / "a.tqs"], ["does not exist"]),
        (["query", index_path, q12], ["dimension", "12", str(D)]),
        (["query", tmp_path / "missing.tqs", q12], ["missing.tqs"]),
        (["query", bad_h5, ann_file], ["text.hdf5", "not a tqsearch index"]),
        (["query", index_path, flat], ["flat.npy"]),
        (["query", index_path, ann_file, "--rerank", 3], ["--keep-vectors"]),
        (["info", bad_h5], ["not a tqsearch index"]),
        (["info", tmp_path / "missing.tqs"], ["missing.tqs"]),
        (["bench", "--methods", "nosuch"], ["nosuch"]),
        (["bench", tmp_path / "missing.hdf5"], ["missing.hdf5"]),
        (["datasets", "fetch", "no-such-set"], ["no-such-set"]),
    ]
    for args, needles in cases:
        _assert_one_line_error(_run(runner, args), *needles)
    assert not (tmp_path / "a.tqs").exists()


def test_usage_errors_exit_2(runner, ann_file, tmp_path):
    r = _run(runner, ["build", ann_file])  # no -o
    assert r.exit_code == 2 and "Traceback" not in r.output
    r = _run(runner, ["build", ann_file, "-o", tmp_path / "x.tqs", "--bits", "9"])
    assert r.exit_code == 2
    r = _run(runner, ["bench", "--bits", "two"])
    assert r.exit_code == 2
    r = _run(runner, ["query", "a.tqs", "b.npy", "-o", tmp_path / "out.xyz"])
    assert r.exit_code == 2 and "extension" in r.output


def test_datasets_list(runner):
    r = _run(runner, ["datasets", "list"])
    assert r.exit_code == 0
    names = [line.split()[0] for line in r.output.strip().splitlines()[1:]]
    assert "glove-25-angular" in names and "sift-128-euclidean" in names


def test_build_and_query_with_the_pca_codec(runner, ann_file, tmp_path):
    index_path = tmp_path / "pca.tqs"
    r = _run(runner, ["build", ann_file, "-o", index_path, "--bits", "3",
                      "--estimator", "pca"])
    assert r.exit_code == 0, r.output
    info = _run(runner, ["info", index_path]).output
    assert "pca" in info and "principal axes" in info
    index = tqsearch.read_index(index_path)
    assert index.estimator == "pca" and index.bits == 3
    r = _run(runner, ["query", index_path, ann_file, "-k", "3"])
    assert r.exit_code == 0, r.output
