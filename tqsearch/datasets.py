"""Benchmark datasets: the ann-benchmarks HDF5 layout, vector files, a registry, downloads.

An ann-benchmarks file holds four arrays and two attributes::

    train      float32 (n, d)     vectors to index
    test       float32 (nq, d)    queries, disjoint from train
    neighbors  int32   (nq, k)    exact top-k train ids per query, nearest first
    distances  float32 (nq, k)    their distances, ascending
    attrs["distance"]             "angular" (1 - cosine), "euclidean" (plain L2,
                                  not squared) or "dot" (minus the inner product)
    attrs["dimension"]            d (optional in older files)

:func:`load_dataset` reads and validates one, :func:`write_dataset` writes one
atomically, :func:`ground_truth` computes the exact neighbours with faiss.
:func:`read_vectors` / :func:`read_queries` read index input from ``.hdf5``,
``.fvecs`` or ``.npy``. :func:`list_datasets` and :func:`fetch_dataset` give the
public ann-benchmarks sets (resumable downloads, validated before they appear
under their final name), and :func:`sample_path` the small sample shipped with
the project.

Every problem with a file raises :class:`DatasetError` (a ``ValueError``) whose
message is one line naming the file and the problem.
"""

from __future__ import annotations

import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .atomic import replacing

__all__ = [
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "DISTANCE_TO_METRIC",
    "SAMPLE_NAME",
    "cache_dir",
    "fetch_dataset",
    "ground_truth",
    "list_datasets",
    "load_dataset",
    "read_queries",
    "read_vectors",
    "sample_path",
    "validate_dataset",
    "write_dataset",
]


class DatasetError(ValueError):
    """A dataset or vector file is missing, malformed, or could not be downloaded."""


# ann-benchmarks distance name -> tqsearch metric name.
DISTANCE_TO_METRIC = {"angular": "cosine", "euclidean": "l2", "dot": "ip"}
_METRIC_TO_DISTANCE = {v: k for k, v in DISTANCE_TO_METRIC.items()}

_REQUIRED_KEYS = ("train", "test", "neighbors", "distances")


def _distance_name(metric: str) -> str:
    """Accept either naming ("angular" or "cosine", ...) and return the ann-benchmarks one."""
    m = str(metric).lower()
    if m in DISTANCE_TO_METRIC:
        return m
    if m in _METRIC_TO_DISTANCE:
        return _METRIC_TO_DISTANCE[m]
    raise ValueError(
        f"unknown metric {metric!r}: use one of 'angular', 'euclidean', 'dot' "
        f"(or tqsearch's 'cosine', 'l2', 'ip')"
    )


# ---------------------------------------------------------------------------
# The Dataset record
# ---------------------------------------------------------------------------


@dataclass(repr=False)
class Dataset:
    """An in-memory ann-benchmarks dataset.

    Attributes
    ----------
    name : str
        Short name (the file name without ``.hdf5``).
    train : ndarray of float32, shape (n, d)
    test : ndarray of float32, shape (nq, d)
    neighbors : ndarray of int32, shape (nq, k)
        Exact nearest train ids per query, nearest first.
    distances : ndarray of float32, shape (nq, k)
        Their distances in ann-benchmarks conventions, ascending.
    distance : str
        "angular", "euclidean" or "dot".
    path : str or None
        The file it was read from, if any.
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    neighbors: np.ndarray
    distances: np.ndarray
    distance: str
    path: str | None = field(default=None)

    @property
    def metric(self) -> str:
        """The tqsearch metric: angular -> "cosine", euclidean -> "l2", dot -> "ip"."""
        return DISTANCE_TO_METRIC[self.distance]

    @property
    def d(self) -> int:
        return int(self.train.shape[1])

    @property
    def n(self) -> int:
        return int(self.train.shape[0])

    @property
    def nq(self) -> int:
        return int(self.test.shape[0])

    @property
    def k(self) -> int:
        """Number of true neighbours stored per query."""
        return int(self.neighbors.shape[1])

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, n={self.n}, nq={self.nq}, d={self.d}, "
            f"k={self.k}, distance={self.distance!r})"
        )


# ---------------------------------------------------------------------------
# Reading, validating and writing ann-benchmarks files
# ---------------------------------------------------------------------------


def _h5py():
    import h5py

    return h5py


def _open_h5(path: str | os.PathLike):
    """Open an HDF5 file read-only, turning every failure into a one-line DatasetError."""
    h5py = _h5py()
    p = os.fspath(path)
    if not os.path.exists(p):
        raise DatasetError(f"{p}: no such file")
    if os.path.isdir(p):
        raise DatasetError(f"{p}: is a directory, not an HDF5 file")
    try:
        return h5py.File(p, "r")
    except OSError as e:
        raise DatasetError(f"{p}: not a readable HDF5 file ({_one_line(e)})") from None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _attr_str(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _attr_str(value[()])
    return str(value)


def _check_layout(f, p: str) -> dict:
    """Check keys, dtypes, shapes and attributes of an open ann-benchmarks file.

    Reads only metadata. Returns a summary dict (n, nq, d, k, distance).
    """
    missing = [key for key in _REQUIRED_KEYS if key not in f]
    if missing:
        raise DatasetError(
            f"{p}: missing dataset(s) {', '.join(repr(m) for m in missing)} (an ann-benchmarks "
            f"file holds 'train', 'test', 'neighbors' and 'distances'; found "
            f"{sorted(f.keys())})"
        )
    h5py = _h5py()
    for key in _REQUIRED_KEYS:
        if not isinstance(f[key], h5py.Dataset):
            raise DatasetError(f"{p}: {key!r} is a group, expected an array")
    train, test, nb, ds = (f[key] for key in _REQUIRED_KEYS)
    for key, arr in (("train", train), ("test", test)):
        if arr.dtype.kind != "f":
            raise DatasetError(
                f"{p}: {key!r} has dtype {arr.dtype}, expected float32 "
                f"(sparse or binary ann-benchmarks sets are not supported)"
            )
        if arr.ndim != 2:
            raise DatasetError(
                f"{p}: {key!r} has shape {arr.shape}, expected a 2-D (rows, dimension) array "
                f"(sparse ann-benchmarks sets are not supported)"
            )
    if nb.dtype.kind not in "iu":
        raise DatasetError(f"{p}: 'neighbors' has dtype {nb.dtype}, expected int32")
    if ds.dtype.kind != "f":
        raise DatasetError(f"{p}: 'distances' has dtype {ds.dtype}, expected float32")
    n, d = train.shape
    nq, dq = test.shape
    if n == 0 or d == 0:
        raise DatasetError(f"{p}: 'train' is empty (shape {train.shape})")
    if nq == 0:
        raise DatasetError(f"{p}: 'test' is empty (shape {test.shape})")
    if dq != d:
        raise DatasetError(f"{p}: dimension mismatch: 'train' has d={d} but 'test' has d={dq}")
    if nb.ndim != 2 or nb.shape[0] != nq:
        raise DatasetError(
            f"{p}: 'neighbors' has shape {nb.shape}, expected ({nq}, k): one row per test query"
        )
    if ds.shape != nb.shape:
        raise DatasetError(
            f"{p}: 'distances' has shape {ds.shape} but 'neighbors' has shape {nb.shape}"
        )
    if nb.shape[1] == 0:
        raise DatasetError(f"{p}: 'neighbors' has no columns (k = 0)")
    if "distance" not in f.attrs:
        raise DatasetError(
            f"{p}: missing attribute 'distance' (one of 'angular', 'euclidean', 'dot')"
        )
    distance = _attr_str(f.attrs["distance"])
    if distance not in DISTANCE_TO_METRIC:
        raise DatasetError(
            f"{p}: unsupported distance {distance!r} (tqsearch supports 'angular', "
            f"'euclidean' and 'dot')"
        )
    if "dimension" in f.attrs:
        try:
            dim = int(np.asarray(f.attrs["dimension"]).reshape(-1)[0])
        except (TypeError, ValueError, IndexError):
            raise DatasetError(
                f"{p}: attribute 'dimension' is {f.attrs['dimension']!r}, expected an integer"
            ) from None
        if dim != d:
            raise DatasetError(f"{p}: attribute 'dimension' is {dim} but 'train' has d={d}")
    return {"n": n, "nq": nq, "d": d, "k": int(nb.shape[1]), "distance": distance}


def _check_neighbors(nb: np.ndarray, n: int, p: str) -> None:
    if nb.size and (int(nb.min()) < 0 or int(nb.max()) >= n):
        raise DatasetError(
            f"{p}: 'neighbors' holds ids outside [0, {n}) (min {int(nb.min())}, "
            f"max {int(nb.max())})"
        )


def validate_dataset(path: str | os.PathLike) -> dict:
    """Check that a file is a usable ann-benchmarks dataset without loading it.

    Reads the metadata, all neighbour ids (to check their range) and the first
    and last row of every array (so a truncated file fails here, not later).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    dict
        ``n``, ``nq``, ``d``, ``k`` and ``distance``.

    Raises
    ------
    DatasetError
        Naming the file and the problem.
    """
    p = os.fspath(path)
    with _open_h5(p) as f:
        try:
            info = _check_layout(f, p)
            for key in _REQUIRED_KEYS:
                arr = f[key]
                arr[:1]
                arr[-1:]
            _check_neighbors(f["neighbors"][()], info["n"], p)
        except DatasetError:
            raise
        except (OSError, RuntimeError, KeyError, ValueError) as e:
            raise DatasetError(f"{p}: corrupt HDF5 data ({_one_line(e)})") from None
    return info


def load_dataset(
    path_or_name: str | os.PathLike,
    *,
    download: bool = True,
    data_dir: str | os.PathLike | None = None,
    progress: bool | Callable[[int, int | None], None] = True,
) -> Dataset:
    """Read an ann-benchmarks HDF5 file into memory, validating it.

    Parameters
    ----------
    path_or_name : str or path-like
        A file path; or ``"sample"`` / the sample's name for the dataset shipped
        with tqsearch; or a registry name such as ``"glove-25-angular"``, looked
        up in the cache folder (see :func:`cache_dir`) and downloaded when absent.
    download : bool, default True
        Allow downloading a registry dataset that is not cached yet.
    data_dir : str or path-like, optional
        Cache folder for registry names.
    progress : bool or callable, default True
        Passed to :func:`fetch_dataset` when a download happens.

    Returns
    -------
    Dataset
        ``train``/``test`` float32 C-contiguous, ``neighbors`` int32,
        ``distances`` float32.

    Raises
    ------
    DatasetError
        If the file is missing, malformed, or the name is unknown.
    """
    p = _resolve(path_or_name, download=download, data_dir=data_dir, progress=progress)
    with _open_h5(p) as f:
        info = _check_layout(f, p)
        try:
            train = np.ascontiguousarray(f["train"][()], dtype=np.float32)
            test = np.ascontiguousarray(f["test"][()], dtype=np.float32)
            nb_raw = f["neighbors"][()]
            distances = np.ascontiguousarray(f["distances"][()], dtype=np.float32)
        except (OSError, RuntimeError, ValueError) as e:
            raise DatasetError(f"{p}: corrupt HDF5 data ({_one_line(e)})") from None
    _check_neighbors(nb_raw, info["n"], p)
    neighbors = np.ascontiguousarray(nb_raw, dtype=np.int32)
    name = Path(p).name
    for suffix in (".hdf5", ".h5"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return Dataset(name, train, test, neighbors, distances, info["distance"], path=p)


def _resolve(path_or_name, *, download, data_dir, progress) -> str:
    p = os.fspath(path_or_name)
    if os.path.exists(p):
        return p
    if p in ("sample", SAMPLE_NAME):
        return os.fspath(sample_path())
    if p in _REGISTRY:
        cached = Path(cache_dir(data_dir)) / f"{p}.hdf5"
        if cached.exists():
            return os.fspath(cached)
        if not download:
            raise DatasetError(
                f"{p}: not downloaded yet (run `tqsearch datasets fetch {p}` or pass download=True)"
            )
        return os.fspath(fetch_dataset(p, data_dir=data_dir, progress=progress))
    if p.endswith((".hdf5", ".h5")) or os.sep in p or "/" in p:
        raise DatasetError(f"{p}: no such file")
    raise DatasetError(
        f"{p}: no such file, and not a known dataset name (see `tqsearch datasets list`)"
    )


def write_dataset(
    path: str | os.PathLike,
    train,
    test=None,
    neighbors=None,
    distances=None,
    distance: str | None = None,
    *,
    attrs: dict | None = None,
    compression: str | None = None,
) -> Path:
    """Write an ann-benchmarks HDF5 file atomically.

    The file is written under a temporary name in the same folder and renamed
    over ``path`` only once complete, so readers never see a partial file.

    Parameters
    ----------
    path : str or path-like
        Destination (``.hdf5``).
    train : array_like (n, d) or Dataset
        Vectors to index; or a :class:`Dataset`, whose fields supply the rest.
    test : array_like (nq, d)
    neighbors : array_like of int (nq, k)
        Ids in ``[0, n)``, nearest first.
    distances : array_like of float (nq, k)
    distance : str
        "angular", "euclidean" or "dot" (tqsearch names "cosine", "l2", "ip"
        are accepted and stored as their ann-benchmarks names).
    attrs : dict, optional
        Extra file attributes (provenance: ``source``, ``seed``, ...).
    compression : {None, "gzip"}, optional
        HDF5 compression; "gzip" uses level 9 with byte shuffling.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    if isinstance(train, Dataset):
        ds = train
        train, test, neighbors, distances = ds.train, ds.test, ds.neighbors, ds.distances
        distance = distance or ds.distance
    if test is None or neighbors is None or distances is None or distance is None:
        raise TypeError(
            "write_dataset needs train, test, neighbors, distances and distance "
            "(or a Dataset as second argument)"
        )
    distance = _distance_name(distance)
    train = _as_matrix(train, "train")
    test = _as_matrix(test, "test")
    if train.shape[1] != test.shape[1]:
        raise ValueError(
            f"train has d={train.shape[1]} but test has d={test.shape[1]}: they must match"
        )
    neighbors = np.asarray(neighbors)
    distances = np.asarray(distances)
    if neighbors.dtype.kind not in "iu":
        raise TypeError(f"neighbors must be integer ids, got dtype {neighbors.dtype}")
    if neighbors.ndim != 2 or neighbors.shape[0] != test.shape[0]:
        raise ValueError(f"neighbors has shape {neighbors.shape}, expected ({test.shape[0]}, k)")
    if distances.shape != neighbors.shape:
        raise ValueError(
            f"distances has shape {distances.shape}, expected {neighbors.shape} like neighbors"
        )
    if neighbors.size and (neighbors.min() < 0 or neighbors.max() >= train.shape[0]):
        raise ValueError(f"neighbors must be ids in [0, {train.shape[0]})")
    if compression not in (None, "gzip"):
        raise ValueError(f"compression must be None or 'gzip', got {compression!r}")
    kw = {"compression": "gzip", "compression_opts": 9, "shuffle": True} if compression else {}

    h5py = _h5py()
    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    with replacing(dest) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["distance"] = distance
        f.attrs["dimension"] = int(train.shape[1])
        f.attrs["point_type"] = "float"
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        for key, arr in (
            ("train", train),
            ("test", test),
            ("neighbors", neighbors.astype(np.int32)),
            ("distances", distances.astype(np.float32)),
        ):
            f.create_dataset(key, data=arr, **kw, **_chunking(arr, compression))
    return dest


# Compressed arrays are chunked in whole rows of about 1 MiB: long chunks
# compress better than h5py's default tiles, and a row read touches one chunk.
_CHUNK_BYTES = 1 << 20


def _chunking(arr: np.ndarray, compression: str | None) -> dict:
    if not compression or arr.size == 0:
        return {}
    rows = max(1, min(arr.shape[0], _CHUNK_BYTES // max(1, arr[0].nbytes)))
    return {"chunks": (rows, arr.shape[1])}


def _as_matrix(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (rows, dimension) array, got shape {x.shape}")
    if x.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


# ---------------------------------------------------------------------------
# Exact ground truth
# ---------------------------------------------------------------------------

# Candidates fetched by faiss beyond k, re-scored in float64, so that float32
# rounding in faiss's BLAS path cannot swap a true neighbour at the k-th place.
_GT_MARGIN = 16
_GT_BLOCK = 256


def ground_truth(train, test, k: int, metric: str = "angular") -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest train vectors of every query, in ann-benchmarks conventions.

    faiss (``IndexFlatIP`` / ``IndexFlatL2``; vectors normalised for angular)
    proposes ``k + 16`` candidates, which are re-scored in float64 and sorted by
    (distance, id), so ties break towards the smaller id.

    Parameters
    ----------
    train : array_like of float, shape (n, d)
    test : array_like of float, shape (nq, d)
    k : int
        Neighbours per query, ``1 <= k <= n``.
    metric : str
        "angular"/"cosine" (distance ``1 - cos``), "euclidean"/"l2" (plain L2
        distance, not squared) or "dot"/"ip" (distance ``-<q, x>``).

    Returns
    -------
    distances : ndarray of float32, shape (nq, k)
        Ascending along each row.
    neighbors : ndarray of int32, shape (nq, k)
    """
    import faiss

    distance = _distance_name(metric)
    xb = _as_matrix(train, "train")
    xq = _as_matrix(test, "test")
    n, d = xb.shape
    if xq.shape[1] != d:
        raise ValueError(f"train has d={d} but test has d={xq.shape[1]}: they must match")
    k = int(k)
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of train vectors ({n}), got {k}")
    kc = min(n, k + _GT_MARGIN)

    xb64 = xb.astype(np.float64)
    xq64 = xq.astype(np.float64)
    if distance == "angular":
        xb64 = _normalize(xb64)
        xq64 = _normalize(xq64)
        index = faiss.IndexFlatIP(d)
        index.add(xb64.astype(np.float32))
        search_q = xq64.astype(np.float32)
    elif distance == "dot":
        index = faiss.IndexFlatIP(d)
        index.add(xb)
        search_q = xq
    else:
        index = faiss.IndexFlatL2(d)
        index.add(xb)
        search_q = xq

    nq = xq.shape[0]
    out_d = np.empty((nq, k), dtype=np.float32)
    out_i = np.empty((nq, k), dtype=np.int32)
    for start in range(0, nq, _GT_BLOCK):
        stop = min(nq, start + _GT_BLOCK)
        _, cand = index.search(np.ascontiguousarray(search_q[start:stop]), kc)
        q = xq64[start:stop, None, :]
        x = xb64[cand]  # (block, kc, d)
        if distance == "euclidean":
            dist = np.sqrt(np.sum((x - q) ** 2, axis=2))
        elif distance == "angular":
            dist = 1.0 - np.einsum("bkd,bkd->bk", x, np.broadcast_to(q, x.shape))
        else:
            dist = -np.einsum("bkd,bkd->bk", x, np.broadcast_to(q, x.shape))
        order = np.lexsort((cand, dist), axis=1)[:, :k]
        out_i[start:stop] = np.take_along_axis(cand, order, axis=1)
        out_d[start:stop] = np.take_along_axis(dist, order, axis=1)
    return out_d, out_i


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


# ---------------------------------------------------------------------------
# Vector files for building an index
# ---------------------------------------------------------------------------

_VECTOR_EXTENSIONS = ".hdf5, .h5, .fvecs or .npy"


def read_vectors(path: str | os.PathLike, dataset: str | None = None) -> np.ndarray:
    """Read a matrix of vectors to index.

    Parameters
    ----------
    path : str or path-like
        ``.hdf5`` / ``.h5`` (the ``train`` array, or ``dataset``), ``.fvecs``
        (little-endian rows: int32 dimension, then that many float32) or
        ``.npy`` (a 2-D floating-point array).
    dataset : str, optional
        Name of the HDF5 array to read (default ``"train"``).

    Returns
    -------
    ndarray of float32, shape (n, d), C-contiguous

    Raises
    ------
    DatasetError
        Unknown extension, wrong format, corrupt or truncated file, non-finite
        values; the message is one line naming the file.
    """
    return _read_matrix(path, dataset or "train")


def read_queries(path: str | os.PathLike, dataset: str | None = None) -> np.ndarray:
    """Read a matrix of query vectors; like :func:`read_vectors`, HDF5 default ``"test"``.

    Returns
    -------
    ndarray of float32, shape (nq, d), C-contiguous
    """
    return _read_matrix(path, dataset or "test")


def _read_matrix(path, h5_key: str) -> np.ndarray:
    p = os.fspath(path)
    ext = os.path.splitext(p)[1].lower()
    if ext not in (".hdf5", ".h5", ".fvecs", ".npy"):
        shown = f"extension {ext!r}" if ext else "no extension"
        raise DatasetError(
            f"{p}: cannot read vectors from a file with {shown} (expected {_VECTOR_EXTENSIONS})"
        )
    if not os.path.exists(p):
        raise DatasetError(f"{p}: no such file")
    if os.path.isdir(p):
        raise DatasetError(f"{p}: is a directory, expected a {ext} file")
    if ext in (".hdf5", ".h5"):
        x = _read_h5_matrix(p, h5_key)
    elif ext == ".fvecs":
        x = _read_fvecs(p)
    else:
        x = _read_npy(p)
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DatasetError(f"{p}: holds no vectors (shape {x.shape})")
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise DatasetError(f"{p}: row {row} holds NaN or infinite values")
    return x


def _read_h5_matrix(p: str, key: str) -> np.ndarray:
    h5py = _h5py()
    with _open_h5(p) as f:
        if key not in f or not isinstance(f[key], h5py.Dataset):
            arrays = sorted(k for k in f.keys() if isinstance(f[k], h5py.Dataset))
            raise DatasetError(
                f"{p}: no array {key!r} in this HDF5 file (it holds {arrays or 'no arrays'})"
            )
        arr = f[key]
        if arr.dtype.kind != "f" or arr.ndim != 2:
            raise DatasetError(
                f"{p}: {key!r} has dtype {arr.dtype} and shape {arr.shape}, "
                f"expected a 2-D floating-point array"
            )
        try:
            data = arr[()]
        except (OSError, RuntimeError, ValueError) as e:
            raise DatasetError(f"{p}: corrupt HDF5 data in {key!r} ({_one_line(e)})") from None
    return np.ascontiguousarray(data, dtype=np.float32)


# Larger first words are almost certainly not an .fvecs dimension.
_FVECS_MAX_DIM = 1 << 20


def _read_fvecs(p: str) -> np.ndarray:
    size = os.path.getsize(p)
    if size == 0:
        raise DatasetError(f"{p}: empty .fvecs file")
    if size < 4:
        raise DatasetError(f"{p}: truncated .fvecs file ({size} bytes, no dimension header)")
    raw = np.fromfile(p, dtype="<i4", count=size // 4)
    d = int(raw[0])
    if not 1 <= d <= _FVECS_MAX_DIM:
        raise DatasetError(
            f"{p}: not an .fvecs file (first row declares dimension {d}; expected an int32 "
            f"between 1 and {_FVECS_MAX_DIM})"
        )
    # Every row must start with the same dimension; check the headers where
    # rows of dimension d would start (including a final partial row's).
    headers = raw[:: d + 1]
    bad = np.flatnonzero(headers != d)
    if bad.size:
        row = int(bad[0])
        raise DatasetError(
            f"{p}: inconsistent .fvecs file: row {row} declares dimension {int(headers[row])} "
            f"but row 0 declares {d} (all rows must have the same dimension)"
        )
    row_bytes = 4 * (d + 1)
    if size % row_bytes:
        tail = size % row_bytes
        raise DatasetError(
            f"{p}: truncated .fvecs file: {size} bytes is not a whole number of "
            f"{row_bytes}-byte rows (d={d}); the last row has "
            f"{max(0, tail - 4) // 4} of {d} values"
        )
    rows = raw.reshape(-1, d + 1)
    return np.ascontiguousarray(rows[:, 1:].view("<f4"), dtype=np.float32)


def _read_npy(p: str) -> np.ndarray:
    try:
        x = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DatasetError(f"{p}: not a readable .npy file ({_one_line(e)})") from None
    if not isinstance(x, np.ndarray):
        raise DatasetError(f"{p}: not a .npy array file")
    if x.ndim != 2:
        raise DatasetError(
            f"{p}: holds an array of shape {x.shape}, expected 2-D (rows, dimension); "
            f"reshape it with x.reshape(len(x), -1) and save it again"
        )
    if x.dtype.kind != "f":
        raise DatasetError(
            f"{p}: holds dtype {x.dtype}, expected floating-point vectors; "
            f"save x.astype(np.float32) instead"
        )
    return np.ascontiguousarray(x, dtype=np.float32)


# ---------------------------------------------------------------------------
# Registry of public ann-benchmarks datasets
# ---------------------------------------------------------------------------


class DatasetInfo(NamedTuple):
    """One downloadable dataset: what ``tqsearch datasets list`` prints."""

    name: str
    dimension: int
    metric: str  # tqsearch metric: "cosine", "l2" or "ip"
    url: str
    distance: str  # ann-benchmarks name stored in the file
    n_train: int
    n_test: int
    size_mb: int  # approximate download size


_ANN_URL = "https://ann-benchmarks.com/{name}.hdf5"
_COCO_URL = "https://github.com/fabiocarrara/str-encoders/releases/download/v0.1.3/{name}.hdf5"

# name: (dimension, distance, n_train, n_test, size in MB, url template)
_REGISTRY: dict[str, tuple[int, str, int, int, int, str]] = {
    "deep-image-96-angular": (96, "angular", 9_990_000, 10_000, 3_600, _ANN_URL),
    "fashion-mnist-784-euclidean": (784, "euclidean", 60_000, 10_000, 217, _ANN_URL),
    "gist-960-euclidean": (960, "euclidean", 1_000_000, 1_000, 3_600, _ANN_URL),
    "glove-25-angular": (25, "angular", 1_183_514, 10_000, 121, _ANN_URL),
    "glove-50-angular": (50, "angular", 1_183_514, 10_000, 235, _ANN_URL),
    "glove-100-angular": (100, "angular", 1_183_514, 10_000, 463, _ANN_URL),
    "glove-200-angular": (200, "angular", 1_183_514, 10_000, 918, _ANN_URL),
    "mnist-784-euclidean": (784, "euclidean", 60_000, 10_000, 217, _ANN_URL),
    "nytimes-256-angular": (256, "angular", 290_000, 10_000, 301, _ANN_URL),
    "sift-128-euclidean": (128, "euclidean", 1_000_000, 10_000, 501, _ANN_URL),
    # Matrix-factorisation item/user factors; the file stores them augmented to
    # 65 dimensions so that the angular ranking equals the inner-product one.
    "lastfm-64-dot": (65, "angular", 292_385, 50_000, 135, _ANN_URL),
    "coco-i2i-512-angular": (512, "angular", 113_287, 10_000, 136, _COCO_URL),
    "coco-t2i-512-angular": (512, "angular", 113_287, 10_000, 136, _COCO_URL),
}


def list_datasets() -> list[DatasetInfo]:
    """The public ann-benchmarks datasets :func:`fetch_dataset` knows, sorted by name.

    Returns
    -------
    list of DatasetInfo
        Rows with ``name``, ``dimension``, ``metric`` (tqsearch name), ``url``,
        ``distance`` (ann-benchmarks name), ``n_train``, ``n_test``, ``size_mb``.
    """
    rows = []
    for name in sorted(_REGISTRY):
        dim, distance, n_train, n_test, size_mb, url = _REGISTRY[name]
        rows.append(
            DatasetInfo(
                name,
                dim,
                DISTANCE_TO_METRIC[distance],
                url.format(name=name),
                distance,
                n_train,
                n_test,
                size_mb,
            )
        )
    return rows


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The download cache folder.

    ``path`` if given, else ``$TQSEARCH_DATA``, else ``$XDG_CACHE_HOME/tqsearch``,
    else ``~/.cache/tqsearch``. Not created here.
    """
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("TQSEARCH_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "tqsearch"


# ---------------------------------------------------------------------------
# Downloads
# ---------------------------------------------------------------------------

_CHUNK = 1 << 20
_TIMEOUT_S = 60
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def fetch_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    url: str | None = None,
    progress: bool | Callable[[int, int | None], None] = True,
    force: bool = False,
) -> Path:
    """Download an ann-benchmarks dataset into the cache folder, resuming if interrupted.

    The bytes go to ``<name>.hdf5.part`` (continued with an HTTP Range request
    on the next call if the transfer breaks). The finished file is validated as
    an ann-benchmarks dataset before it is renamed to ``<name>.hdf5``; a corrupt
    download is deleted. A valid cached file is returned without any network
    access.

    Parameters
    ----------
    name : str
        A name from :func:`list_datasets`, or any file-name-safe name when
        ``url`` is given.
    data_dir : str or path-like, optional
        Cache folder; default from :func:`cache_dir` (``$TQSEARCH_DATA``,
        ``$XDG_CACHE_HOME/tqsearch`` or ``~/.cache/tqsearch``).
    url : str, optional
        Download from this URL instead of the registry's.
    progress : bool or callable, default True
        True draws a progress bar on stderr; a callable is called as
        ``progress(bytes_done, bytes_total_or_None)`` after every chunk.
    force : bool, default False
        Download again even if a cached file exists.

    Returns
    -------
    pathlib.Path
        Path of the validated ``<name>.hdf5``.

    Raises
    ------
    DatasetError
        Unknown name, HTTP or network error, interrupted transfer (run again to
        resume), or a downloaded file that is not a valid dataset.
    """
    name = str(name)
    if name.endswith(".hdf5"):
        name = name[: -len(".hdf5")]
    if not _NAME_RE.match(name):
        raise DatasetError(
            f"{name!r}: not a valid dataset name (letters, digits, '.', '_' and '-' only)"
        )
    if url is None:
        if name not in _REGISTRY:
            known = ", ".join(sorted(_REGISTRY))
            raise DatasetError(
                f"unknown dataset {name!r} (known: {known}; or pass a URL to download from)"
            )
        url = _REGISTRY[name][5].format(name=name)

    folder = cache_dir(data_dir)
    dest = folder / f"{name}.hdf5"
    part = folder / f"{name}.hdf5.part"
    if dest.exists() and not force:
        try:
            validate_dataset(dest)
        except DatasetError as e:
            raise DatasetError(
                f"{e} (the cached file is not a valid dataset: delete it or fetch with force=True)"
            ) from None
        return dest
    folder.mkdir(parents=True, exist_ok=True)

    _download(url, part, name, progress)
    try:
        validate_dataset(part)
    except DatasetError as e:
        part.unlink(missing_ok=True)
        raise DatasetError(
            f"downloaded {url} but it is not a valid ann-benchmarks file, so it was deleted: {e}"
        ) from None
    os.replace(part, dest)
    return dest


def _request(url: str, start: int) -> urllib.request.Request:
    headers = {}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.Request(url, headers=headers)


def _content_range(headers) -> tuple[int | None, int | None]:
    """Parse ``Content-Range: bytes a-b/total`` or ``bytes */total`` into (a, total)."""
    value = headers.get("Content-Range") if headers is not None else None
    m = re.match(r"\s*bytes\s+(\d+|\*)(?:-\d+)?/(\d+|\*)", value or "")
    if not m:
        return None, None
    first = None if m.group(1) == "*" else int(m.group(1))
    total = None if m.group(2) == "*" else int(m.group(2))
    return first, total


def _download(url: str, part: Path, name: str, progress) -> None:
    """Fill ``part`` with the whole body of ``url``, continuing what is already there."""
    start = part.stat().st_size if part.exists() else 0
    for _attempt in range(2):
        try:
            resp = urllib.request.urlopen(_request(url, start), timeout=_TIMEOUT_S)
        except urllib.error.HTTPError as e:
            if e.code == 416 and start:
                _, total = _content_range(e.headers)
                e.close()
                if total is not None and total == start:
                    return  # the part file already holds the whole body
                # The part does not fit the remote file: start over.
                part.unlink(missing_ok=True)
                start = 0
                continue
            e.close()
            raise DatasetError(f"downloading {url} failed: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            raise DatasetError(f"cannot download {url}: {_one_line(reason)}") from None
        with resp:
            status = resp.status
            length = resp.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            if start and status == 206:
                first, total = _content_range(resp.headers)
                if first != start:
                    # Not the range we asked for: discard and start over.
                    resp.close()
                    part.unlink(missing_ok=True)
                    start = 0
                    continue
                mode = "ab"
                expected = (
                    total if total is not None else (start + length if length is not None else None)
                )
            else:
                # Fresh download, or a server that ignored the Range header.
                start = 0
                mode = "wb"
                expected = length
            _copy_body(resp, part, mode, start, expected, url, name, progress)
            return
    raise DatasetError(f"downloading {url} failed: the server does not honour range requests")


def _copy_body(resp, part: Path, mode: str, start: int, expected, url, name, progress) -> None:
    done = start
    bar = None
    callback = progress if callable(progress) else None
    if progress is True and expected:
        import click

        bar = click.progressbar(
            length=expected,
            label=f"{name} ({expected / 1e6:.1f} MB)",
            file=sys.stderr,
            show_eta=True,
            width=30,
        )
        bar.__enter__()
        if done:
            bar.update(done)
    elif progress is True:
        # Unknown size: no bar, one line now and one when done.
        print(f"downloading {name} from {url} ...", file=sys.stderr, flush=True)
    try:
        with open(part, mode) as out:
            while True:
                try:
                    chunk = resp.read(_CHUNK)
                except (http.client.IncompleteRead, OSError, http.client.HTTPException) as e:
                    out.flush()
                    raise DatasetError(
                        f"download of {url} interrupted after {done} bytes "
                        f"({_one_line(e)}); run again to resume"
                    ) from None
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
                if callback is not None:
                    callback(done, expected)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
        elif progress is True:
            print(f"{name}: {done / 1e6:.1f} MB", file=sys.stderr, flush=True)
    if expected is not None and done != expected:
        raise DatasetError(
            f"download of {url} interrupted after {done} of {expected} bytes; run again to resume"
        )


# ---------------------------------------------------------------------------
# The sample shipped with the project
# ---------------------------------------------------------------------------

SAMPLE_NAME = "wordnet-minilm-384-angular-4k"
_SAMPLE_FILE = f"{SAMPLE_NAME}.hdf5"


def sample_path() -> Path:
    """Path of the small real dataset shipped with tqsearch.

    A 384-d angular sample of WordNet gloss embeddings (see
    ``datasets/README.md`` for its provenance and licence), looked up as
    package data first and then in the ``datasets/`` folder of a source
    checkout.

    Raises
    ------
    DatasetError
        If neither location holds it (e.g. an install without package data).
    """
    here = Path(__file__).resolve().parent
    candidates = [here / "data" / _SAMPLE_FILE, here.parent / "datasets" / _SAMPLE_FILE]
    for c in candidates:
        if c.is_file():
            return c
    raise DatasetError(
        f"the sample dataset {_SAMPLE_FILE} is not installed (looked in "
        f"{', '.join(str(c.parent) for c in candidates)}); use a source checkout or "
        f"`tqsearch datasets fetch NAME`"
    )
