"""Versioned on-disk format: atomic writes, checked and memory-mapped reads.

Layout of an index file (all integers little-endian)::

    0   magic            8 bytes  b"TQSEARCH"
    8   format version   uint32
    12  header length    uint32   (h)
    16  header           h bytes  UTF-8 JSON: parameters, and per array its
                                  name, dtype, shape and byte offset
    ..  arrays           each starting on a 64-byte boundary, C order
    end trailer          24 bytes b"TQSEND\\0\\0", uint64 file size,
                                  uint32 CRC-32 of every byte before the
                                  trailer, uint32 zero

Reading checks, in order: magic (foreign file), version (newer writer),
trailer and size (truncation), CRC (corruption), then header consistency.
The code arrays are memory-mapped read-only, so opening a large index costs
no more memory than the pages the searches touch.
"""

from __future__ import annotations

import json
import os
import struct
import zlib

import numpy as np

from .atomic import replacing
from .codec import TurboQuantCodec
from .index import TurboQuantIndex
from .pca import PcaCodebook
from .rotation import from_state

__all__ = ["write_index", "read_index", "IndexFormatError", "FORMAT_VERSION"]

MAGIC = b"TQSEARCH"
TRAILER_MAGIC = b"TQSEND\0\0"
# 2: "blocked" codes may be stored with their full steps regrouped per vector
# (header parameter "vector_steps"); version 1 files are read as canonical
FORMAT_VERSION = 2
_ALIGN = 64
_PREFIX = struct.Struct("<8sII")
_TRAILER = struct.Struct("<8sQII")
_CRC_CHUNK = 1 << 24
# arrays read into memory (small); the others are memory-mapped
_LOADED = {"rotation.", "codebook.", "qjl."}


class IndexFormatError(ValueError):
    """The file is not a readable tqsearch index (foreign, truncated, corrupt, newer)."""


def write_index(index: TurboQuantIndex, path) -> None:
    """Save ``index`` to ``path`` atomically.

    The file is written next to ``path`` under a temporary name, flushed to
    disk and renamed over ``path`` in one step: an interrupted write leaves
    any previous file at ``path`` intact.
    """
    if not isinstance(index, TurboQuantIndex):
        raise TypeError(f"write_index expects a TurboQuantIndex, got {type(index).__name__}")
    path = os.fspath(path)
    arrays = _arrays_of(index)
    header = {
        "params": {
            "d": index.d, "bits": index.bits, "metric": index.metric, "qjl": index.qjl,
            "rotation": index.rotation, "seed": index.seed, "estimator": index.estimator,
            "keep_vectors": index.keep_vectors, "ntotal": index.ntotal,
            "center": index.center, "trained": index.is_trained,
            "layout": index._store.layout, "vector_steps": index._store.vector_steps,
        },
        "arrays": [],
    }
    # offsets depend on the header length, which depends on the offsets: fix point
    body_start = 0
    for _ in range(4):
        offset = body_start
        header["arrays"] = []
        for name, arr in arrays.items():
            offset = _aligned(offset)
            header["arrays"].append({"name": name, "dtype": arr.dtype.str,
                                     "shape": list(arr.shape), "offset": offset})
            offset += arr.nbytes
        blob = json.dumps(header, sort_keys=True).encode()
        new_start = _aligned(_PREFIX.size + len(blob))
        if new_start == body_start:
            break
        body_start = new_start
    with replacing(path) as tmp, open(tmp, "wb") as f:
        crc = 0
        head = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(blob)) + blob
        head += b"\0" * (body_start - len(head))
        f.write(head)
        crc = zlib.crc32(head, crc)
        pos = body_start
        for spec, arr in zip(header["arrays"], arrays.values(), strict=True):
            pad = b"\0" * (spec["offset"] - pos)
            f.write(pad)
            crc = zlib.crc32(pad, crc)
            data = memoryview(np.ascontiguousarray(arr).reshape(-1)).cast("B")
            for lo in range(0, len(data), _CRC_CHUNK):
                chunk = data[lo:lo + _CRC_CHUNK]
                f.write(chunk)
                crc = zlib.crc32(chunk, crc)
            pos = spec["offset"] + arr.nbytes
        size = pos + _TRAILER.size
        f.write(_TRAILER.pack(TRAILER_MAGIC, size, crc, 0))


def read_index(path, *, mmap: bool = True, verify: bool = True) -> TurboQuantIndex:
    """Load an index written by :func:`write_index`.

    Parameters
    ----------
    path : str or os.PathLike
    mmap : bool, default True
        Memory-map the codes (and raw vectors) read-only instead of reading them.
    verify : bool, default True
        Check the CRC of the whole file (one sequential read).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    IndexFormatError
        If the file is not a tqsearch index, was written by a newer version,
        is truncated or corrupt.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(_PREFIX.size)
        if len(prefix) < _PREFIX.size or prefix[:8] != MAGIC:
            raise IndexFormatError(f"{path} is not a tqsearch index file (bad magic bytes)")
        _, version, header_len = _PREFIX.unpack(prefix)
        if version > FORMAT_VERSION:
            raise IndexFormatError(
                f"{path} was written in index format v{version} by a newer tqsearch; this "
                f"version reads up to v{FORMAT_VERSION}: upgrade tqsearch to read it")
        if size < _PREFIX.size + header_len + _TRAILER.size:
            raise IndexFormatError(f"{path} is truncated ({size} bytes)")
        f.seek(size - _TRAILER.size)
        magic, recorded_size, crc, _ = _TRAILER.unpack(f.read(_TRAILER.size))
        if magic != TRAILER_MAGIC or recorded_size != size:
            raise IndexFormatError(
                f"{path} is truncated or was not completely written "
                f"({size} bytes on disk, trailer missing or inconsistent)")
        try:
            f.seek(_PREFIX.size)
            header = json.loads(f.read(header_len).decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise IndexFormatError(f"{path} has a corrupt header") from None
    if verify:
        _check_crc(path, size - _TRAILER.size, crc)
    arrays = {}
    body_end = size - _TRAILER.size
    for spec in header["arrays"]:
        dtype = np.dtype(spec["dtype"])
        shape = tuple(spec["shape"])
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if spec["offset"] + nbytes > body_end:
            raise IndexFormatError(f"{path}: array {spec['name']} extends past the end")
        if mmap and not spec["name"].startswith(tuple(_LOADED)) and nbytes > 0:
            arr = np.memmap(path, dtype=dtype, mode="r", offset=spec["offset"], shape=shape)
        else:
            arr = np.fromfile(path, dtype=dtype, count=nbytes // dtype.itemsize,
                              offset=spec["offset"]).reshape(shape)
        arrays[spec["name"]] = arr
    return _index_from(header["params"], arrays, path)


def _arrays_of(index: TurboQuantIndex) -> dict[str, np.ndarray]:
    codec = index.codec
    arrays = {f"rotation.{k}": v for k, v in codec.rotation.state().items()}
    arrays["codebook.centroids"] = codec.centroids
    arrays["codebook.boundaries"] = codec.boundaries
    if codec.qjl:
        arrays["qjl.matrix"] = codec.qjl_matrix
    if codec.center:
        arrays["codebook.mean"] = codec.mean
    if codec.estimator == "pca" and codec.trained:
        coords, books = codec.books
        arrays["codebook.coords"] = coords
        arrays["codebook.books"] = books
    for name, arr in index._store.state().items():
        arrays[f"store.{name}"] = arr
    return arrays


def _index_from(params, arrays, path) -> TurboQuantIndex:
    try:
        d = int(params["d"])
        index = TurboQuantIndex(
            d, int(params["bits"]), metric=params["metric"], qjl=bool(params["qjl"]),
            rotation=params["rotation"], seed=int(params["seed"]),
            estimator=params["estimator"] if params["estimator"] != "qjl" else "corrected",
            keep_vectors=params["keep_vectors"], center=bool(params["center"]))
        rotation_state = {k.split(".", 1)[1]: v for k, v in arrays.items()
                          if k.startswith("rotation.")}
        codec: TurboQuantCodec = index.codec
        codec.rotation = from_state(params["rotation"], d, rotation_state)
        codec.centroids = np.ascontiguousarray(arrays["codebook.centroids"], np.float32)
        codec.boundaries = np.ascontiguousarray(arrays["codebook.boundaries"], np.float32)
        if codec.qjl:
            codec.qjl_matrix = np.ascontiguousarray(arrays["qjl.matrix"], np.float32)
        if codec.center:
            codec.mean = np.ascontiguousarray(arrays["codebook.mean"], np.float32)
        if codec.estimator == "pca" and params["trained"]:
            codec.set_codebook(PcaCodebook(codec.rotation.matrix, arrays["codebook.coords"],
                                           arrays["codebook.books"]))
        index.is_trained = bool(params["trained"])
        store = {name.split(".", 1)[1]: arr for name, arr in arrays.items()
                 if name.startswith("store.")}
        ntotal = int(params["ntotal"])
    except (KeyError, ValueError, TypeError) as exc:
        raise IndexFormatError(f"{path} has an inconsistent header: {exc}") from None
    try:
        # version 1 files hold "blocked" codes in canonical step order
        index._store.load(store, ntotal, params.get("layout"),
                          bool(params.get("vector_steps", False)))
    except ValueError as exc:
        raise IndexFormatError(f"{path}: {exc}") from None
    return index


def _check_crc(path, length, expected):
    crc = 0
    with open(path, "rb") as f:
        remaining = length
        while remaining:
            chunk = f.read(min(_CRC_CHUNK, remaining))
            if not chunk:
                break
            crc = zlib.crc32(chunk, crc)
            remaining -= len(chunk)
    if crc != expected:
        raise IndexFormatError(f"{path} is corrupt (checksum mismatch)")


def _aligned(offset: int) -> int:
    return (offset + _ALIGN - 1) // _ALIGN * _ALIGN
