"""Storage of an index's codes: parallel per-vector arrays in one of three layouts.

``"rows"``: ``codes`` is uint8 (n, code_bytes), one packed row per vector
(any bit width, QJL included).

``"blocked"``: for 1, 2 or 4 bits per coordinate without QJL, ``codes`` is the
fast-scan layout of :mod:`tqsearch.kernels.fastscan`, uint8 (ceil(n / 32),
16 * M) with ``M = ceil(d * bits / 4)`` nibbles per vector: the same bytes as
packed rows (plus padding of the last block), laid out so that a SIMD byte
shuffle scores 32 vectors per table lookup. Where the VNNI engines scan them
(``fastscan.VECTOR_STEPS``), the full 64-byte steps of each block are kept
regrouped per vector (``vector_steps``; :func:`tqsearch.kernels.fastscan.to_vector_steps`),
which spares those engines a shuffle per step; files record the order and are
converted on reading where it differs.

``"triplets"``: for 3 bits per coordinate without QJL, ``codes`` is the layout
of :mod:`tqsearch.kernels.triplets`, uint8 (ceil(n / 32), 12 * D4) with ``D4``
``d`` rounded up to a multiple of 4: 3 bits per coordinate, blocked for int8
dot products.

Beside the codes: ``norms`` float32 (n,), ``gains`` uint16 (n,) when the codec
stores them, and ``raw`` (n, d) float32/float16 when vectors are kept for
exact re-ranking. Scanning a range of vectors is the natural unit of work
(a shard, or a partition of a future inverted file).
"""

from __future__ import annotations

import numpy as np

from .codec import EncodedBatch, TurboQuantCodec
from .kernels import fastscan, triplets

__all__ = ["CodeStore", "RAW_DTYPES"]

RAW_DTYPES = {"float32": np.float32, "float16": np.float16}


def blocked_layout_fits(codec: TurboQuantCodec) -> bool:
    """Whether the codec's codes are whole nibbles (1, 2 or 4 bits, no QJL; any PCA codes)."""
    return codec.estimator == "pca" or (not codec.qjl and codec.index_bits in (1, 2, 4))


def triplets_layout_fits(codec: TurboQuantCodec) -> bool:
    """Whether the codec's codes are 3-bit TurboQuant indices (no QJL, no PCA)."""
    return codec.estimator != "pca" and not codec.qjl and codec.index_bits == 3


def layout_for(codec: TurboQuantCodec) -> str:
    """The layout a store of this codec's codes uses (module docstring)."""
    if blocked_layout_fits(codec):
        return "blocked"
    return "triplets" if triplets_layout_fits(codec) else "rows"


class CodeStore:
    """Per-vector arrays of one index.

    Parameters
    ----------
    codec : TurboQuantCodec
    keep_vectors : {None, "float32", "float16"}
    """

    def __init__(self, codec: TurboQuantCodec, keep_vectors=None):
        self.codec = codec
        self.layout = layout_for(codec)
        self.vector_steps = self.layout == "blocked" and fastscan.VECTOR_STEPS
        self.nibbles = (codec.d * codec.index_bits + 3) // 4
        self.n = 0
        if self.layout == "blocked":
            codes = np.empty((0, 16 * self.nibbles), dtype=np.uint8)
        elif self.layout == "triplets":
            codes = np.empty((0, 12 * triplets.padded_dim(codec.d)), dtype=np.uint8)
        else:
            codes = np.empty((0, codec.code_bytes), dtype=np.uint8)
        self.arrays = {"codes": codes}
        if codec.has_norms:
            self.arrays["norms"] = np.empty(0, dtype=np.float32)
        if codec.has_gains:
            self.arrays["gains"] = np.empty(0, dtype=np.uint16)
        if keep_vectors:
            self.arrays["raw"] = np.empty((0, codec.d), dtype=RAW_DTYPES[keep_vectors])

    # -- sizes ---------------------------------------------------------------
    @property
    def codes(self) -> np.ndarray:
        return self.arrays["codes"]

    @property
    def nbytes(self) -> int:
        """Bytes held by all arrays."""
        return int(sum(a.nbytes for a in self.arrays.values()))

    @property
    def blocks(self) -> bool:
        """Whether codes are stored in blocks of 32 vectors ("blocked", "triplets")."""
        return self.layout != "rows"

    def _rows_for(self, n: int) -> int:
        return fastscan.n_blocks(n) if self.blocks else n

    def _length(self, name: str, n: int) -> int:
        """Rows array ``name`` has for ``n`` vectors.

        In the block layouts the per-vector factors are padded (with zeros) to
        whole blocks, so that the scan reads a block's 32 of them at once.
        """
        if name == "codes":
            return self._rows_for(n)
        if self.blocks and name in ("norms", "gains"):
            return fastscan.BLOCK * fastscan.n_blocks(n)
        return n

    # -- writing -------------------------------------------------------------
    def reserve(self, n_total: int) -> None:
        """Re-allocate every array for exactly ``n_total`` vectors, keeping the first ``n``."""
        for name, arr in self.arrays.items():
            rows, keep = self._length(name, n_total), self._length(name, self.n)
            grown = np.zeros((rows, *arr.shape[1:]), dtype=arr.dtype)
            grown[:keep] = arr[:keep]
            self.arrays[name] = grown

    def block_target(self, at: int):
        """``(blocked codes, first block)`` when vectors from ``at`` can be coded in place.

        That is the fast-scan layout with ``at`` on a block boundary; otherwise
        ``(None, 0)`` and codes come as rows for :meth:`put` to scatter.
        """
        if self.layout == "blocked" and at % fastscan.BLOCK == 0:
            return self.arrays["codes"], at // fastscan.BLOCK
        return None, 0

    def put(self, at: int, batch: EncodedBatch, raw: np.ndarray | None = None) -> None:
        """Write a batch of codes for vectors ``at .. at + len(batch) - 1`` (space reserved)."""
        n = batch.codes.shape[0]
        coded_in_place = batch.codes.shape[1] == 0  # see block_target
        if self.layout == "blocked":
            # codes arrive in canonical order (scattered here, or coded in place into
            # fresh blocks); blocks shared with earlier vectors are regrouped back first
            codes = self.arrays["codes"]
            first, last = at // fastscan.BLOCK, fastscan.n_blocks(at + n)
            if not coded_in_place:
                if self.vector_steps:
                    fastscan.to_canonical_steps(codes, first, last)
                fastscan.scatter_rows(batch.codes, at, codes)
            if self.vector_steps:
                fastscan.to_vector_steps(codes, first, last)
        elif self.layout == "triplets":
            triplets.scatter_rows(batch.codes, at, self.arrays["codes"], self.codec.d)
        elif self.layout == "rows":
            self.arrays["codes"][at:at + n] = batch.codes
        for name in ("norms", "gains"):
            if name in self.arrays:
                self.arrays[name][at:at + n] = getattr(batch, name)
        if raw is not None and "raw" in self.arrays:
            self.arrays["raw"][at:at + n] = raw
        self.n = max(self.n, at + n)

    # -- reading -------------------------------------------------------------
    def rows(self, start: int, stop: int) -> EncodedBatch:
        """Codes of vectors ``start .. stop - 1`` as packed rows (a copy for block layouts)."""
        if self.layout == "blocked":
            b0, b1 = start // fastscan.BLOCK, fastscan.n_blocks(stop)
            blocks = self.canonical_codes(b0, b1)
            nib = fastscan.unpack_blocked(blocks, stop - b0 * fastscan.BLOCK,
                                          self.nibbles)[start - b0 * fastscan.BLOCK:]
            if nib.shape[1] % 2:
                nib = np.concatenate([nib, np.zeros((nib.shape[0], 1), np.uint8)], axis=1)
            codes = np.ascontiguousarray(nib[:, 0::2] | (nib[:, 1::2] << 4))
        elif self.layout == "triplets":
            codes = np.empty((stop - start, self.codec.code_bytes), dtype=np.uint8)
            triplets.gather_rows(self.codes, start, stop, self.codec.d, codes)
        else:
            codes = np.ascontiguousarray(self.codes[start:stop])
        return EncodedBatch(codes, self.field("norms", start, stop),
                            self.field("gains", start, stop))

    def canonical_codes(self, first: int = 0, last: int | None = None) -> np.ndarray:
        """Blocks ``first .. last - 1`` of the "blocked" codes in canonical step order
        (as :func:`tqsearch.kernels.fastscan.pack_blocked` lays them out): a view when
        stored so, else a regrouped copy."""
        blocks = self.codes[first:last]
        return fastscan.to_canonical_steps(blocks.copy()) if self.vector_steps else blocks

    def field(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows of a per-vector field, or an empty array if the codec does not store it."""
        if name not in self.arrays:
            return np.empty(0, dtype=np.float32 if name == "norms" else np.uint16)
        return self.arrays[name][start:stop]

    # -- persistence -----------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """Arrays trimmed to the stored vectors (and their padding), for writing."""
        return {name: arr[: self._length(name, self.n)] for name, arr in self.arrays.items()}

    def load(self, arrays: dict[str, np.ndarray], n: int, layout: str | None = None,
             vector_steps: bool | None = None) -> None:
        """Adopt arrays read from a file (possibly memory-mapped) holding ``n`` vectors.

        ``layout`` is the file's (default: this store's); 3-bit codes written as
        "rows" (before the "triplets" layout existed) are converted. ``vector_steps``
        is the file's step order of "blocked" codes (default: this store's); codes in
        the other order are regrouped into a copy.
        """
        if set(arrays) != set(self.arrays):
            raise ValueError(f"stored arrays {sorted(arrays)} do not match the index "
                             f"parameters (expected {sorted(self.arrays)})")
        layout = self.layout if layout is None else layout
        if layout == "rows" and self.layout == "triplets":
            rows = arrays["codes"]
            if rows.shape != (n, self.codec.code_bytes):
                raise ValueError(f"array codes has shape {rows.shape}, expected "
                                 f"{(n, self.codec.code_bytes)}")
            codes = np.zeros((self._rows_for(n), self.arrays["codes"].shape[1]), dtype=np.uint8)
            triplets.scatter_rows(np.ascontiguousarray(rows), 0, codes, self.codec.d)
            arrays = {**arrays, "codes": codes}
        elif layout != self.layout:
            raise ValueError(f"code layout {layout!r} does not match this version's "
                             f"{self.layout!r} for these parameters")
        if vector_steps is not None and self.layout == "blocked" \
                and bool(vector_steps) != self.vector_steps:
            codes = np.array(arrays["codes"], dtype=np.uint8, order="C")
            regroup = fastscan.to_vector_steps if self.vector_steps else fastscan.to_canonical_steps
            arrays = {**arrays, "codes": regroup(codes)}
        adopted = {}
        for name, arr in arrays.items():
            expected = self.arrays[name].shape[1:]
            rows = self._length(name, n)
            if arr.shape[0] == n < rows and arr.shape[1:] == expected:
                # factors written unpadded (format v1 before padding): pad a copy
                padded = np.zeros((rows, *expected), dtype=arr.dtype)
                padded[:n] = arr
                arr = padded
            if arr.shape != (rows, *expected) or arr.dtype != self.arrays[name].dtype:
                raise ValueError(f"array {name} has shape {arr.shape} and dtype {arr.dtype}, "
                                 f"expected {(rows, *expected)} {self.arrays[name].dtype}")
            adopted[name] = arr
        self.arrays = adopted
        self.n = n
