"""Index files: round trips, memory mapping, damaged files, atomic saves."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from reference import assert_same_results

import tqsearch
from tqsearch import IndexFormatError, TurboQuantIndex, read_index, write_index


def built(ds, **kwargs):
    index = TurboQuantIndex(ds.d, kwargs.pop("bits", 3), **kwargs)
    index.add(ds.xb)
    return index


def memmaps_of(obj, seen=None):
    """Every np.memmap reachable from ``obj`` through attributes, dicts, lists and tuples."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, np.memmap):
        return [obj]
    if isinstance(obj, np.ndarray):
        return [obj.base] if isinstance(obj.base, np.memmap) else []
    if isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        children = list(obj)
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("tqsearch"):
        children = list(vars(obj).values())
    else:
        return []
    return [m for child in children for m in memmaps_of(child, seen)]


def temp_files(folder):
    return [p for p in os.listdir(folder) if p.endswith(".tmp")]


ROUND_TRIP_CONFIGS = [
    # metric, qjl, rotation, estimator, keep_vectors
    ("ip", False, "hadamard", "corrected", None),
    ("ip", True, "dense", "corrected", None),
    ("cosine", False, "dense", "mse", None),
    ("cosine", True, "hadamard", "mse", "float32"),
    ("l2", False, "hadamard", "mse", "float32"),
    ("l2", True, "dense", "corrected", None),
    ("cosine", False, "hadamard", "corrected", "float32"),  # centred by default
    ("l2", False, "dense", "corrected", None),  # centred by default
]


@pytest.mark.parametrize("metric, qjl, rotation, estimator, keep", ROUND_TRIP_CONFIGS)
def test_round_trip_gives_identical_results(synthetic, tmp_path, metric, qjl, rotation,
                                            estimator, keep):
    ds = synthetic(d=40, nb=400, nq=10)
    index = built(ds, metric=metric, qjl=qjl, rotation=rotation, estimator=estimator,
                  keep_vectors=keep, seed=13)
    path = tmp_path / "index.tqs"
    write_index(index, path)
    again = read_index(path)
    assert isinstance(again, TurboQuantIndex)
    for name in ("d", "bits", "metric", "qjl", "rotation", "estimator", "code_size", "ntotal",
                 "seed", "keep_vectors", "center", "is_trained"):
        assert getattr(again, name) == getattr(index, name), name
    if index.center:
        np.testing.assert_array_equal(again.codec.mean, index.codec.mean)
    np.testing.assert_array_equal(again.codes(), index.codes())
    np.testing.assert_array_equal(again.reconstruct_n(), index.reconstruct_n())
    assert_same_results(again.search(ds.xq, 10), index.search(ds.xq, 10))
    if keep:
        assert_same_results(again.search(ds.xq, 10, rerank=4),
                            index.search(ds.xq, 10, rerank=4))
    # new vectors are coded exactly as by the original index
    np.testing.assert_array_equal(again.sa_encode(ds.xq), index.sa_encode(ds.xq))
    assert temp_files(tmp_path) == []


def test_read_is_memory_mapped_and_still_usable(synthetic, tmp_path):
    ds = synthetic(d=40, nb=400, nq=10)
    index = built(ds, metric="l2", keep_vectors="float32", seed=2)
    path = tmp_path / "index.tqs"
    write_index(index, path)
    mapped = read_index(path)
    maps = memmaps_of(mapped)
    # the codes and the kept vectors are mapped from the file, not read into memory
    assert all(os.path.samefile(m.filename, path) for m in maps)
    assert any(m.dtype == np.uint8 and m.nbytes >= index.ntotal * index.codec.code_bytes
               for m in maps)
    assert any(m.dtype == np.float32 and m.shape == (400, 40) for m in maps)
    D, I = mapped.search(ds.xq, 5, rerank=3)
    np.testing.assert_array_equal(I, index.search(ds.xq, 5, rerank=3)[1])
    # adding to a read index works and does not touch the file
    before = path.read_bytes()
    mapped.add(ds.xq)
    index.add(ds.xq)
    assert mapped.ntotal == 410
    np.testing.assert_array_equal(mapped.codes(), index.codes())
    assert_same_results(mapped.search(ds.xq, 5), index.search(ds.xq, 5))
    assert path.read_bytes() == before
    # and it can be saved over the file it was read from
    write_index(mapped, path)
    again = read_index(path, mmap=False)
    assert memmaps_of(again) == []
    assert again.ntotal == 410
    np.testing.assert_array_equal(again.codes(), index.codes())


def test_empty_index_round_trip(tmp_path):
    index = TurboQuantIndex(24, 2, metric="cosine", seed=1)
    assert index.center and not index.is_trained
    write_index(index, tmp_path / "e.tqs")
    again = read_index(tmp_path / "e.tqs")
    assert again.ntotal == 0 and not again.is_trained
    xq = np.ones((2, 24), np.float32)
    assert np.all(again.search(xq, 3)[1] == -1)
    again.add(xq)
    assert again.search(xq, 1)[1].tolist() == [[0], [0]]


def test_write_needs_an_index(tmp_path):
    with pytest.raises(TypeError, match="write_index expects a TurboQuantIndex, got dict"):
        write_index({}, tmp_path / "x.tqs")


# -- damaged files ---------------------------------------------------------------------

@pytest.fixture
def saved(synthetic, tmp_path):
    ds = synthetic(d=32, nb=300, nq=2)
    path = tmp_path / "good.tqs"
    write_index(built(ds, metric="ip", seed=1), path)
    return path


def test_flipped_byte_is_corruption(saved):
    data = bytearray(saved.read_bytes())
    data[len(data) // 2] ^= 0x40
    saved.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="corrupt .checksum mismatch"):
        read_index(saved)


def test_flipped_header_byte_is_corruption(saved):
    data = bytearray(saved.read_bytes())
    data[40] ^= 0x01
    saved.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="corrupt"):
        read_index(saved)


@pytest.mark.parametrize("keep", [0.5, 0.999, 20, 10])
def test_truncated_file(saved, keep):
    data = saved.read_bytes()
    n = int(len(data) * keep) if keep < 1 else keep
    saved.write_bytes(data[:n])
    with pytest.raises(IndexFormatError, match="truncated"):
        read_index(saved)


@pytest.mark.parametrize("content", [b"", b"TQS", np.random.default_rng(0).bytes(5000),
                                     b"\x89HDF\r\n\x1a\n" * 10])
def test_foreign_file(tmp_path, content):
    path = tmp_path / "foreign.bin"
    path.write_bytes(content)
    with pytest.raises(IndexFormatError, match="not a tqsearch index file"):
        read_index(path)


def test_newer_version_is_reported_before_the_checksum(saved):
    # the version field (uint32 LE after the 8 magic bytes) is checked first,
    # so the message names the version even though the CRC no longer matches
    data = bytearray(saved.read_bytes())
    data[8:12] = struct.pack("<I", 99)
    saved.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="format v99 by a newer tqsearch") as info:
        read_index(saved)
    assert "upgrade tqsearch" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_index(tmp_path / "nope.tqs")


def test_format_error_is_a_value_error():
    assert issubclass(IndexFormatError, ValueError)
    assert tqsearch.IndexFormatError is IndexFormatError


# -- atomic saves ----------------------------------------------------------------------

class _FailingFile:
    """File wrapper whose ``write`` raises after ``budget`` calls."""

    def __init__(self, f, budget, exc):
        self._f, self._budget, self._exc = f, budget, exc

    def write(self, data):
        if self._budget == 0:
            raise self._exc
        self._budget -= 1
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.mark.parametrize("budget", [0, 1, 3])
@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
def test_interrupted_save_keeps_the_old_file(synthetic, saved, monkeypatch, budget, exc):
    before = saved.read_bytes()
    ds = synthetic(d=32, nb=300, nq=2)
    other = built(ds, metric="l2", seed=7, bits=4)
    def failing_open(*args, **kwargs):
        return _FailingFile(open(*args, **kwargs), budget, exc)

    # the writer's own `open` fails after `budget` writes
    monkeypatch.setattr(tqsearch.io, "open", failing_open, raising=False)
    with pytest.raises(type(exc)):
        write_index(other, saved)
    monkeypatch.undo()
    assert saved.read_bytes() == before
    assert temp_files(saved.parent) == []
    assert read_index(saved).metric == "ip"


def test_failure_before_rename_keeps_the_old_file(synthetic, saved, monkeypatch):
    before = saved.read_bytes()
    ds = synthetic(d=32, nb=300, nq=2)

    def no_sync(fd):
        raise OSError("fsync failed")

    monkeypatch.setattr(tqsearch.io.os, "fsync", no_sync)
    with pytest.raises(OSError, match="fsync failed"):
        write_index(built(ds, metric="l2", seed=7), saved)
    monkeypatch.undo()
    assert saved.read_bytes() == before
    assert temp_files(saved.parent) == []


def test_unpadded_factors_of_earlier_files_are_padded_on_load():
    # Format v1 files written before per-vector factors were padded to whole blocks
    # hold exactly ntotal norms and gains; loading them pads a copy.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((70, 16)).astype(np.float32)
    q = rng.standard_normal((4, 16)).astype(np.float32)
    index = tqsearch.TurboQuantIndex(16, 2, metric="l2")
    index.add(x)
    state = index._store.state()
    assert state["norms"].shape == (96,) and state["gains"].shape == (96,)
    trimmed = {name: (arr[:70] if name in ("norms", "gains") else arr)
               for name, arr in state.items()}
    other = tqsearch.TurboQuantIndex(16, 2, metric="l2")
    other.codec.mean = index.codec.mean
    other.is_trained = True
    other._store.load(trimmed, 70)
    np.testing.assert_array_equal(other.search(q, 5)[1], index.search(q, 5)[1])


@pytest.mark.parametrize("bits, d", [(2, 30), (4, 24)])
def test_codes_in_the_other_step_order_are_regrouped_on_load(bits, d):
    # Blocked codes are stored with full steps regrouped per vector where the VNNI
    # engines scan them, canonical elsewhere (and in format v1 files): loading
    # codes of the other order regroups a copy (d = 30 at 2 bits: a partial step).
    rng = np.random.default_rng(4)
    x = rng.standard_normal((100, d)).astype(np.float32)
    q = rng.standard_normal((5, d)).astype(np.float32)
    index = tqsearch.TurboQuantIndex(d, bits, metric="l2")
    index.add(x)
    store = index._store
    state = store.state()
    canonical = store.canonical_codes()
    for order_here in (False, True):
        other = tqsearch.TurboQuantIndex(d, bits, metric="l2")
        other.codec.mean = index.codec.mean
        other.is_trained = True
        other._store.vector_steps = order_here
        for stored_vector, codes in ((False, canonical), (store.vector_steps, state["codes"])):
            other._store.load({**state, "codes": codes}, 100, "blocked", stored_vector)
            np.testing.assert_array_equal(other._store.canonical_codes(), canonical)
            if order_here == store.vector_steps:
                np.testing.assert_array_equal(other.search(q, 5)[1], index.search(q, 5)[1])
