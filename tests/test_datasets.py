"""Tests for tqsearch.datasets: HDF5 layout, vector files, ground truth, sample, downloads."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from tqsearch import datasets as tds
from tqsearch.datasets import (
    Dataset,
    DatasetError,
    fetch_dataset,
    ground_truth,
    list_datasets,
    load_dataset,
    read_queries,
    read_vectors,
    sample_path,
    validate_dataset,
    write_dataset,
)

REPO = Path(__file__).resolve().parent.parent
SHARED_SOURCE = REPO.parent / "shared" / "data" / "wordnet-minilm-384-angular.hdf5"


# ---------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------


def brute_force(train, test, k, distance):
    """Float64 reference: full distance matrix, stable sort (ties -> smaller id)."""
    x = np.asarray(train, dtype=np.float64)
    q = np.asarray(test, dtype=np.float64)
    if distance == "angular":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        dist = 1.0 - q @ x.T
    elif distance == "dot":
        dist = -(q @ x.T)
    else:
        dist = np.sqrt(((q[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    ids = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, ids, axis=1), ids


def small_dataset(n=300, nq=20, d=16, k=10, distance="euclidean", seed=0):
    rng = np.random.default_rng(seed)
    # a few clusters so that neighbours are not all equidistant
    centers = rng.standard_normal((8, d)).astype(np.float32) * 3
    train = (centers[rng.integers(0, 8, n)] + rng.standard_normal((n, d))).astype(np.float32)
    test = (centers[rng.integers(0, 8, nq)] + rng.standard_normal((nq, d))).astype(np.float32)
    dist, ids = ground_truth(train, test, k, distance)
    return train, test, ids, dist


def write_h5(path, **arrays_and_attrs):
    attrs = arrays_and_attrs.pop("attrs", {})
    with h5py.File(path, "w") as f:
        for key, arr in arrays_and_attrs.items():
            f.create_dataset(key, data=arr)
        for key, value in attrs.items():
            f.attrs[key] = value


def write_fvecs(path, x, dims=None):
    x = np.asarray(x, dtype="<f4")
    with open(path, "wb") as fh:
        for i, row in enumerate(x):
            d = len(row) if dims is None else dims[i]
            fh.write(np.int32(d).astype("<i4").tobytes())
            fh.write(row.tobytes())


def assert_one_line(err: pytest.ExceptionInfo, *needles):
    msg = str(err.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg


# ---------------------------------------------------------------------------
# HDF5 layout
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [None, "gzip"])
@pytest.mark.parametrize(
    "distance,metric", [("angular", "cosine"), ("euclidean", "l2"), ("dot", "ip")]
)
def test_write_load_round_trip(tmp_path, distance, metric, compression):
    train, test, ids, dist = small_dataset(distance=distance)
    path = tmp_path / "toy-16-x.hdf5"
    out = write_dataset(
        path, train, test, ids, dist, distance, attrs={"source": "toy"}, compression=compression
    )
    assert out == path
    assert sorted(os.listdir(tmp_path)) == ["toy-16-x.hdf5"]  # no temp file left behind
    ds = load_dataset(path)
    assert isinstance(ds, Dataset)
    assert ds.name == "toy-16-x"
    assert ds.distance == distance and ds.metric == metric
    assert (ds.n, ds.nq, ds.d, ds.k) == (300, 20, 16, 10)
    assert ds.train.dtype == np.float32 and ds.train.flags.c_contiguous
    assert ds.neighbors.dtype == np.int32 and ds.distances.dtype == np.float32
    np.testing.assert_array_equal(ds.train, train)
    np.testing.assert_array_equal(ds.test, test)
    np.testing.assert_array_equal(ds.neighbors, ids)
    np.testing.assert_array_equal(ds.distances, dist)
    with h5py.File(path, "r") as f:
        assert f.attrs["dimension"] == 16 and f.attrs["source"] == "toy"
    assert "n=300" in repr(ds)
    # a Dataset can be written back as is
    write_dataset(tmp_path / "copy.hdf5", ds)
    np.testing.assert_array_equal(load_dataset(tmp_path / "copy.hdf5").neighbors, ids)


def test_write_accepts_tqsearch_metric_names(tmp_path):
    train, test, ids, dist = small_dataset(distance="angular")
    write_dataset(tmp_path / "a.hdf5", train, test, ids, dist, "cosine")
    assert load_dataset(tmp_path / "a.hdf5").distance == "angular"


def test_write_is_atomic_on_failure(tmp_path):
    train, test, ids, dist = small_dataset()
    path = tmp_path / "d.hdf5"
    write_dataset(path, train, test, ids, dist, "euclidean")
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_dataset(path, train, test, ids, dist, "euclidean", attrs={"bad": object()})
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["d.hdf5"]


def test_write_rejects_bad_input(tmp_path):
    train, test, ids, dist = small_dataset()
    p = tmp_path / "x.hdf5"
    with pytest.raises(ValueError, match="must match"):
        write_dataset(p, train, test[:, :8], ids, dist, "euclidean")
    with pytest.raises(ValueError, match="ids in"):
        write_dataset(p, train, test, ids + 1000, dist, "euclidean")
    with pytest.raises(ValueError, match="unknown metric"):
        write_dataset(p, train, test, ids, dist, "hamming")
    with pytest.raises(ValueError, match="distances has shape"):
        write_dataset(p, train, test, ids, dist[:, :3], "euclidean")
    assert not p.exists()


def _valid_arrays():
    rng = np.random.default_rng(1)
    return {
        "train": rng.standard_normal((50, 8)).astype(np.float32),
        "test": rng.standard_normal((5, 8)).astype(np.float32),
        "neighbors": rng.integers(0, 50, (5, 10)).astype(np.int32),
        "distances": np.sort(rng.random((5, 10)).astype(np.float32), axis=1),
        "attrs": {"distance": "euclidean", "dimension": 8},
    }


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda a: a.pop("neighbors"), "missing dataset(s) 'neighbors'"),
        (lambda a: a.update(train=a["train"].astype(np.int32)), "'train' has dtype int32"),
        (lambda a: a.update(train=a["train"][:, :6]), "dimension mismatch"),
        (lambda a: a.update(test=a["test"].ravel()), "'test' has shape (40,)"),
        (lambda a: a.update(neighbors=a["neighbors"][:3]), "'neighbors' has shape (3, 10)"),
        (lambda a: a.update(distances=a["distances"][:, :4]), "'distances' has shape (5, 4)"),
        (lambda a: a.update(neighbors=a["neighbors"] * 1.0), "'neighbors' has dtype float64"),
        (lambda a: a.update(neighbors=a["neighbors"] + 50), "ids outside [0, 50)"),
        (lambda a: a["attrs"].pop("distance"), "missing attribute 'distance'"),
        (lambda a: a["attrs"].update(distance="jaccard"), "unsupported distance 'jaccard'"),
        (lambda a: a["attrs"].update(dimension=9), "attribute 'dimension' is 9"),
        (lambda a: a.update(train=np.zeros((0, 8), np.float32)), "'train' is empty"),
    ],
)
def test_load_rejects_malformed_files(tmp_path, mutate, needle):
    arrays = _valid_arrays()
    mutate(arrays)
    path = tmp_path / "bad.hdf5"
    write_h5(path, **arrays)
    for fn in (load_dataset, validate_dataset):
        with pytest.raises(DatasetError) as err:
            fn(path)
        assert_one_line(err, str(path), needle)


def test_load_accepts_valid_minimal_file_without_dimension_attr(tmp_path):
    arrays = _valid_arrays()
    del arrays["attrs"]["dimension"]  # older ann-benchmarks files lack it
    arrays["train"] = arrays["train"].astype(np.float64)  # converted on load
    write_h5(tmp_path / "ok.hdf5", **arrays)
    ds = load_dataset(tmp_path / "ok.hdf5")
    assert ds.train.dtype == np.float32 and ds.d == 8
    assert validate_dataset(tmp_path / "ok.hdf5")["k"] == 10


def test_load_rejects_non_hdf5_and_missing(tmp_path):
    p = tmp_path / "text.hdf5"
    p.write_text("not an hdf5 file\n")
    with pytest.raises(DatasetError) as err:
        load_dataset(p)
    assert_one_line(err, str(p), "not a readable HDF5 file")
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "missing.hdf5")
    with pytest.raises(DatasetError, match="not a known dataset name"):
        load_dataset("no-such-dataset-xyz")


def test_validate_detects_truncated_hdf5(tmp_path):
    train, test, ids, dist = small_dataset(n=2000, d=32)
    good = tmp_path / "good.hdf5"
    write_dataset(good, train, test, ids, dist, "euclidean")
    data = good.read_bytes()
    bad = tmp_path / "cut.hdf5"
    bad.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DatasetError) as err:
        validate_dataset(bad)
    assert_one_line(err, str(bad))


# ---------------------------------------------------------------------------
# Vector files
# ---------------------------------------------------------------------------


def test_read_vectors_fvecs(tmp_path):
    x = np.random.default_rng(2).standard_normal((7, 5)).astype(np.float32)
    p = tmp_path / "v.fvecs"
    write_fvecs(p, x)
    y = read_vectors(p)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(read_queries(p), x)


def test_read_vectors_fvecs_truncated(tmp_path):
    x = np.ones((4, 6), np.float32)
    p = tmp_path / "t.fvecs"
    write_fvecs(p, x)
    p.write_bytes(p.read_bytes()[:-8])
    with pytest.raises(DatasetError) as err:
        read_vectors(p)
    assert_one_line(err, str(p), "truncated .fvecs", "4 of 6 values")
    p.write_bytes(b"\x06\x00")
    with pytest.raises(DatasetError, match="truncated .fvecs"):
        read_vectors(p)
    p.write_bytes(b"")
    with pytest.raises(DatasetError, match="empty .fvecs"):
        read_vectors(p)


def test_read_vectors_fvecs_inconsistent_dims(tmp_path):
    x = np.ones((5, 4), np.float32)
    p = tmp_path / "w.fvecs"
    # row 3 claims dimension 5 but has 4 values: sizes still add up to whole rows
    write_fvecs(p, x, dims=[4, 4, 4, 5, 4])
    with pytest.raises(DatasetError) as err:
        read_vectors(p)
    assert_one_line(err, str(p), "row 3 declares dimension 5")
    # a mismatch that also breaks the row size
    with open(p, "wb") as fh:
        for d in (4, 3):
            fh.write(np.int32(d).tobytes() + np.ones(d, "<f4").tobytes())
    with pytest.raises(DatasetError, match="row 1 declares dimension 3"):
        read_vectors(p)


def test_read_vectors_fvecs_garbage_header(tmp_path):
    p = tmp_path / "g.fvecs"
    p.write_bytes(np.float32(3.5).tobytes() * 10)
    with pytest.raises(DatasetError, match="not an .fvecs file"):
        read_vectors(p)


def test_read_vectors_npy(tmp_path):
    x = np.random.default_rng(3).standard_normal((9, 4))
    p = tmp_path / "v.npy"
    np.save(p, x)
    y = read_vectors(p)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x, rtol=1e-6)
    np.save(p, x.ravel())
    with pytest.raises(DatasetError) as err:
        read_vectors(p)
    assert_one_line(err, str(p), "expected 2-D")
    np.save(p, x.astype(np.int64))
    with pytest.raises(DatasetError, match="astype"):
        read_vectors(p)
    p.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DatasetError, match="not a readable .npy"):
        read_vectors(p)


def test_read_vectors_hdf5(tmp_path):
    train, test, ids, dist = small_dataset()
    p = tmp_path / "d.h5"
    write_dataset(p, train, test, ids, dist, "euclidean")
    np.testing.assert_array_equal(read_vectors(p), train)
    np.testing.assert_array_equal(read_queries(p), test)
    np.testing.assert_array_equal(read_vectors(p, dataset="test"), test)
    with pytest.raises(DatasetError) as err:
        read_vectors(p, dataset="base")
    assert_one_line(err, str(p), "no array 'base'", "'train'")
    with pytest.raises(DatasetError, match="2-D floating-point"):
        read_vectors(p, dataset="neighbors")


def test_read_vectors_errors(tmp_path):
    p = tmp_path / "v.txt"
    p.write_text("1 2 3\n")
    with pytest.raises(DatasetError) as err:
        read_vectors(p)
    assert_one_line(err, str(p), "extension '.txt'", ".fvecs")
    with pytest.raises(DatasetError, match="no such file"):
        read_vectors(tmp_path / "missing.npy")
    x = np.ones((3, 4), np.float32)
    x[1, 2] = np.nan
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(DatasetError, match="row 1 holds NaN"):
        read_vectors(tmp_path / "nan.npy")


# ---------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("distance", ["angular", "euclidean", "dot"])
def test_ground_truth_matches_brute_force(distance):
    rng = np.random.default_rng(4)
    train = rng.standard_normal((700, 24)).astype(np.float32)
    test = rng.standard_normal((600, 24)).astype(np.float32)  # > one block of queries
    dist, ids = ground_truth(train, test, 20, distance)
    ref_d, ref_i = brute_force(train, test, 20, distance)
    assert dist.dtype == np.float32 and ids.dtype == np.int32
    assert dist.shape == ids.shape == (600, 20)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-6, atol=1e-6)
    assert np.all(np.diff(dist, axis=1) >= 0)


def test_ground_truth_conventions_and_ties():
    train = np.array([[3, 4], [0, 0], [3, 4], [6, 8]], np.float32)
    test = np.array([[0, 0]], np.float32)
    dist, ids = ground_truth(train, test, 4, "l2")
    np.testing.assert_array_equal(ids[0], [1, 0, 2, 3])  # tie 0/2 -> smaller id first
    np.testing.assert_allclose(dist[0], [0, 5, 5, 10])  # plain, not squared
    dist, ids = ground_truth(train[[0, 3]], np.array([[4, -3]], np.float32), 2, "cosine")
    np.testing.assert_allclose(dist[0], [1.0, 1.0], atol=1e-7)  # orthogonal: 1 - cos = 1
    dist, ids = ground_truth(train, np.array([[1, 1]], np.float32), 2, "ip")
    np.testing.assert_array_equal(ids[0], [3, 0])
    np.testing.assert_allclose(dist[0], [-14, -7])


def test_ground_truth_rejects_bad_calls():
    x = np.ones((5, 3), np.float32)
    with pytest.raises(ValueError, match="k must be between 1 and"):
        ground_truth(x, x, 6, "l2")
    with pytest.raises(ValueError, match="must match"):
        ground_truth(x, x[:, :2], 2, "l2")
    with pytest.raises(ValueError, match="unknown metric"):
        ground_truth(x, x, 2, "hamming")


# ---------------------------------------------------------------------------
# The shipped sample
# ---------------------------------------------------------------------------


def test_sample_is_valid_and_exact():
    path = sample_path()
    assert path.is_file()
    assert path.stat().st_size <= 8 * 1024 * 1024
    info = validate_dataset(path)
    assert info == {"n": 4000, "nq": 1000, "d": 384, "k": 100, "distance": "angular"}
    ds = load_dataset("sample")
    assert ds.metric == "cosine" and ds.d % 8 == 0
    ref_d, ref_i = brute_force(ds.train, ds.test, 100, "angular")
    np.testing.assert_array_equal(ds.neighbors, ref_i)
    np.testing.assert_allclose(ds.distances, ref_d, atol=1e-6)
    # queries are disjoint from the indexed rows
    assert float(ds.distances[:, 0].min()) > 1e-4
    with h5py.File(path, "r") as f:
        assert "WordNet" in f.attrs["source"] and "default_rng" in f.attrs["subset"]


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_SOURCE.exists(), reason="full source dataset not available")
def test_sample_is_reproduced_by_its_script(tmp_path):
    out = tmp_path / "sample.hdf5"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, str(REPO / "datasets" / "make_sample.py"), str(SHARED_SOURCE)]
    subprocess.run([*cmd, "--out", str(out)], check=True, env=env, capture_output=True)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(sample_path().read_bytes()).hexdigest()


# ---------------------------------------------------------------------------
# Registry and cache folder
# ---------------------------------------------------------------------------


def test_list_datasets():
    rows = list_datasets()
    by_name = {r.name: r for r in rows}
    assert [r.name for r in rows] == sorted(by_name)
    glove = by_name["glove-25-angular"]
    assert (glove.dimension, glove.metric, glove.distance) == (25, "cosine", "angular")
    assert glove.url == "https://ann-benchmarks.com/glove-25-angular.hdf5"
    assert by_name["sift-128-euclidean"].metric == "l2"
    for r in rows:
        assert r.metric in ("cosine", "l2", "ip") and r.dimension > 0
        assert r.url.startswith("https://") and r.url.endswith(f"/{r.name}.hdf5")
        assert str(r.dimension) in r.name or r.name == "lastfm-64-dot"
        assert r._asdict()["url"] == r.url


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("TQSEARCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tds.cache_dir() == tmp_path / "xdg" / "tqsearch"
    monkeypatch.setenv("TQSEARCH_DATA", str(tmp_path / "env"))
    assert tds.cache_dir() == tmp_path / "env"
    assert tds.cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("TQSEARCH_DATA")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert tds.cache_dir() == Path.home() / ".cache" / "tqsearch"


def test_load_registry_name_from_cache(tmp_path):
    train, test, ids, dist = small_dataset(d=25, distance="angular")
    write_dataset(tmp_path / "glove-25-angular.hdf5", train, test, ids, dist, "angular")
    ds = load_dataset("glove-25-angular", data_dir=tmp_path, download=False)
    assert ds.name == "glove-25-angular" and ds.metric == "cosine"
    with pytest.raises(DatasetError, match="not downloaded yet"):
        load_dataset("glove-50-angular", data_dir=tmp_path, download=False)


# ---------------------------------------------------------------------------
# Downloads against a local HTTP server
# ---------------------------------------------------------------------------


class FileServer:
    """Serves byte strings on 127.0.0.1, with optional misbehaviour per path."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.mode: dict[str, str] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                mode = server.mode.get(self.path, "ok")
                if mode.startswith("status"):
                    self.send_error(int(mode[6:]))
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and mode != "norange":
                    start = int(m.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                if mode != "nolength":
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if mode == "cut":  # close the connection half-way through the body
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    """Bytes of a small valid ann-benchmarks file (~100 KB)."""
    path = tmp_path_factory.mktemp("payload") / "toy.hdf5"
    train, test, ids, dist = small_dataset(n=1500, nq=30, d=16, k=10)
    write_dataset(path, train, test, ids, dist, "euclidean")
    return path.read_bytes()


def test_fetch_complete_download(server, payload, tmp_path):
    server.files["/toy.hdf5"] = payload
    calls = []
    path = fetch_dataset(
        "toy", data_dir=tmp_path, url=server.url("/toy.hdf5"), progress=lambda *a: calls.append(a)
    )
    assert path == tmp_path / "toy.hdf5"
    assert path.read_bytes() == payload
    assert sorted(os.listdir(tmp_path)) == ["toy.hdf5"]
    assert calls[-1] == (len(payload), len(payload))
    assert server.requests == [("/toy.hdf5", None)]
    # present and valid: returned without touching the network
    server.mode["/toy.hdf5"] = "status500"
    assert fetch_dataset("toy", data_dir=tmp_path, url=server.url("/toy.hdf5")) == path
    assert len(server.requests) == 1


def test_fetch_with_progress_bar(server, payload, tmp_path, capsys):
    server.files["/toy.hdf5"] = payload
    path = fetch_dataset("toy", data_dir=tmp_path, url=server.url("/toy.hdf5"), progress=True)
    assert path.read_bytes() == payload
    assert capsys.readouterr().out == ""  # the bar goes to stderr only


def test_fetch_without_content_length(server, payload, tmp_path, capsys):
    server.files["/toy.hdf5"] = payload
    server.mode["/toy.hdf5"] = "nolength"
    path = fetch_dataset("toy", data_dir=tmp_path, url=server.url("/toy.hdf5"), progress=True)
    assert path.read_bytes() == payload
    assert "toy" in capsys.readouterr().err


def test_fetch_resumes_partial_download(server, payload, tmp_path):
    server.files["/toy.hdf5"] = payload
    cut = len(payload) // 3
    (tmp_path / "toy.hdf5.part").write_bytes(payload[:cut])
    path = fetch_dataset("toy", data_dir=tmp_path, url=server.url("/toy.hdf5"), progress=False)
    assert server.requests == [("/toy.hdf5", f"bytes={cut}-")]
    assert path.read_bytes() == payload
    assert not (tmp_path / "toy.hdf5.part").exists()


def test_fetch_restarts_when_range_ignored(server, payload, tmp_path):
    server.files["/toy.hdf5"] = payload
    server.mode["/toy.hdf5"] = "norange"
    (tmp_path / "toy.hdf5.part").write_bytes(payload[:1000])
    path = fetch_dataset("toy", data_dir=tmp_path, url=server.url("/toy.hdf5"), progress=False)
    assert server.requests == [("/toy.hdf5", "bytes=1000-")]
    assert path.read_bytes() == payload


def test_fetch_part_already_complete_416(server, payload, tmp_path):
    server.files["/toy.hdf5"] = payload
    (tmp_path / "toy.hdf5.part").write_bytes(payload)
    path = fetch_dataset("toy", data_dir=tmp_path, url=server.url("/toy.hdf5"), progress=False)
    assert path.read_bytes() == payload
    # a part larger than the remote file is discarded and fetched again
    path.unlink()
    (tmp_path / "toy.hdf5.part").write_bytes(payload + b"junk")
    path = fetch_dataset("toy", data_dir=tmp_path, url=server.url("/toy.hdf5"), progress=False)
    assert path.read_bytes() == payload
    assert server.requests[-2:] == [
        ("/toy.hdf5", f"bytes={len(payload) + 4}-"),
        ("/toy.hdf5", None),
    ]


@pytest.mark.parametrize("status", [404, 500])
def test_fetch_http_error(server, tmp_path, status):
    server.mode["/toy.hdf5"] = f"status{status}"
    with pytest.raises(DatasetError) as err:
        fetch_dataset("toy", data_dir=tmp_path, url=server.url("/toy.hdf5"), progress=False)
    assert_one_line(err, f"HTTP {status}", "/toy.hdf5")
    assert not (tmp_path / "toy.hdf5").exists()


def test_fetch_unreachable_server(tmp_path):
    s = FileServer()
    url = s.url("/toy.hdf5")
    s.close()  # nothing listens on that port any more
    with pytest.raises(DatasetError, match="cannot download"):
        fetch_dataset("toy", data_dir=tmp_path, url=url, progress=False)
    assert not (tmp_path / "toy.hdf5").exists()


@pytest.mark.parametrize("kind", ["garbage", "truncated_hdf5"])
def test_fetch_corrupt_file_is_rejected(server, payload, tmp_path, kind):
    body = os.urandom(50_000) if kind == "garbage" else payload[: len(payload) // 2]
    server.files["/toy.hdf5"] = body
    with pytest.raises(DatasetError) as err:
        fetch_dataset("toy", data_dir=tmp_path, url=server.url("/toy.hdf5"), progress=False)
    assert_one_line(err, "not a valid ann-benchmarks file", "deleted")
    assert os.listdir(tmp_path) == []  # neither a final file nor a corrupt part


def test_fetch_interrupted_keeps_part_and_resumes(server, payload, tmp_path):
    server.files["/toy.hdf5"] = payload
    server.mode["/toy.hdf5"] = "cut"
    url = server.url("/toy.hdf5")
    with pytest.raises(DatasetError) as err:
        fetch_dataset("toy", data_dir=tmp_path, url=url, progress=False)
    assert_one_line(err, "interrupted", "run again to resume")
    assert not (tmp_path / "toy.hdf5").exists()
    part = tmp_path / "toy.hdf5.part"
    assert part.read_bytes() == payload[: len(payload) // 2]
    server.mode["/toy.hdf5"] = "ok"
    path = fetch_dataset("toy", data_dir=tmp_path, url=url, progress=False)
    assert server.requests[-1] == ("/toy.hdf5", f"bytes={len(payload) // 2}-")
    assert path.read_bytes() == payload
    assert not part.exists()


def test_fetch_rejects_invalid_cached_file_and_bad_names(server, payload, tmp_path):
    (tmp_path / "toy.hdf5").write_bytes(b"not hdf5")
    server.files["/toy.hdf5"] = payload
    url = server.url("/toy.hdf5")
    with pytest.raises(DatasetError, match="force=True"):
        fetch_dataset("toy", data_dir=tmp_path, url=url, progress=False)
    path = fetch_dataset("toy", data_dir=tmp_path, url=url, progress=False, force=True)
    assert path.read_bytes() == payload
    with pytest.raises(DatasetError, match="unknown dataset"):
        fetch_dataset("no-such-set", data_dir=tmp_path)
    with pytest.raises(DatasetError, match="not a valid dataset name"):
        fetch_dataset("../evil", data_dir=tmp_path, url=url)
