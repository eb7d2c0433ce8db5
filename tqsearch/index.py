"""The user-facing index: validation, storage, dispatch to the kernels, threads."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numba
import numpy as np

from .codebook import MAX_BITS
from .codec import ESTIMATORS, METRICS, make_codec
from .config import ADD_CHUNK
from .kernels.blocked_scan import (
    ENGINE_DOT3,
    filter_fields,
    scan_blocked_topk,
    scan_blocked_topk_serial,
    scan_engine,
    tile_blocks_for,
)
from .kernels.fastscan import BLOCK
from .kernels.query import search_few
from .kernels.rerank import rerank_exact
from .kernels.rowdot import DOT_AVAILABLE, scan_rowdot
from .kernels.scan import scan_topk
from .results import FORM_COSINE, FORM_L2, FORM_SIMILARITY, finalize_topk
from .rotation import ROTATIONS, SERIAL_MAX_ROWS
from .store import RAW_DTYPES, CodeStore
from .validation import as_matrix, check_finite, check_k, check_positive_int

__all__ = ["TurboQuantIndex"]


class TurboQuantIndex:
    """Brute-force index over TurboQuant codes, with the faiss calling conventions.

    Parameters
    ----------
    d : int
        Vector dimension.
    bits : int, default 4
        Bits per coordinate, 1 to 8 (with ``qjl=True`` one of them is the QJL bit).
    metric : {"ip", "cosine", "l2"}, default "ip"
        "ip": inner product, larger is better. "cosine": vectors and queries are
        normalised, scores are cosine similarities. "l2": squared euclidean
        distance, smaller is better.
    qjl : bool, default False
        Spend one of the bits on the QJL residual sign (TurboQuant_prod): the
        inner-product estimate becomes unbiased, but ranking recall is usually
        lower than without it.
    rotation : {"hadamard", "dense"}, default "hadamard"
        Randomized Hadamard (O(d log d)) or Haar-random dense (O(d^2)) rotation.
    seed : int, default 0
        Seed of the rotation (and QJL projection): same seed, same codes.
    estimator : {"corrected", "mse", "pca"}, default "corrected"
        "mse" is the paper's TurboQuant_mse estimate; "corrected" divides by the
        per-vector ``<u, c(u)>`` (2 more bytes per vector) and ranks better.
        "pca" is trained (:mod:`tqsearch.pca`): principal axes instead of the
        random rotation, bits spent where the data varies, 16 centroids per
        nibble over a group of axes, with the corrected estimator's factors;
        same bytes per vector, usually the best recall at 1 to 3 bits on
        real embeddings (1 to 4 bits; ``rotation`` does not apply; needs
        :meth:`train`, or takes its sample from the first batch added).
    keep_vectors : {None, "float32", "float16"}, default None
        Also keep the original vectors (cosine: normalised) so that
        ``search(..., rerank=F)`` can re-score ``F * k`` candidates exactly.
    center : bool, optional
        Code vectors relative to their mean ("l2" and "cosine" only): ranks
        with the error of ``q - mean`` against ``x - mean``, which is much
        smaller for near neighbours of data that is not centred (SIFT-like
        descriptors, most text embeddings). The mean is taken by
        :meth:`train`, or from the first batch added. Default: on for the
        "corrected" estimator with "l2"/"cosine", off otherwise (the paper's
        data-oblivious codecs).

    Attributes
    ----------
    ntotal : int
    code_size : int
        Bytes stored per vector by the codes (indices, signs, norm, gain);
        kept raw vectors are reported separately in ``raw_size``.

    Examples
    --------
    >>> import numpy as np, tqsearch
    >>> x = np.random.default_rng(0).standard_normal((1000, 64)).astype(np.float32)
    >>> index = tqsearch.TurboQuantIndex(64, bits=4, metric="l2")
    >>> index.add(x)
    >>> D, I = index.search(x[:5], 3)
    >>> I[:, 0].tolist()
    [0, 1, 2, 3, 4]
    """

    def __init__(self, d, bits=4, *, metric="ip", qjl=False, rotation="hadamard", seed=0,
                 estimator="corrected", keep_vectors=None, center=None):
        d = check_positive_int(d, "d")
        if d < 2:
            raise ValueError(f"dimension must be at least 2, got d={d}")
        if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
            raise TypeError(f"bits must be an integer, got {bits!r}")
        if not 1 <= bits <= MAX_BITS:
            raise ValueError(f"bits must be between 1 and {MAX_BITS}, got bits={bits}")
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
        if rotation not in ROTATIONS:
            raise ValueError(f"unknown rotation {rotation!r}: use one of {', '.join(ROTATIONS)}")
        if estimator not in ESTIMATORS:
            raise ValueError(
                f"unknown estimator {estimator!r}: use one of {', '.join(ESTIMATORS)}")
        if not isinstance(qjl, (bool, np.bool_)):
            raise TypeError(f"qjl must be True or False, got {qjl!r}")
        if qjl and bits < 2:
            raise ValueError(
                f"qjl=True needs bits >= 2 (bits - 1 for the codebook plus 1 QJL bit), "
                f"got bits={bits}; use qjl=False or more bits")
        if estimator == "pca" and (qjl or bits > 4):
            raise ValueError(
                f"estimator='pca' codes 1 to 4 bits per coordinate without QJL, got "
                f"bits={bits}, qjl={qjl}; use estimator='corrected' for these")
        if keep_vectors not in (None, *RAW_DTYPES):
            raise ValueError(
                f"keep_vectors must be None, 'float32' or 'float16', got {keep_vectors!r}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if center is None:
            center = estimator in ("corrected", "pca") and not qjl and metric != "ip"
        elif not isinstance(center, (bool, np.bool_)):
            raise TypeError(f"center must be True, False or None, got {center!r}")
        elif center and metric == "ip":
            raise ValueError("center=True applies to metric 'l2' or 'cosine', not 'ip'")
        self.seed = int(seed)
        self.keep_vectors = keep_vectors
        self.codec = make_codec(d, int(bits), metric, bool(qjl), rotation, estimator, self.seed,
                                center=bool(center))
        self.is_trained = not self.codec.needs_training
        self._store = CodeStore(self.codec, keep_vectors)
        self._scan_cache = None
        self.n_threads = None

    # -- properties ----------------------------------------------------------
    d = property(lambda self: self.codec.d)
    bits = property(lambda self: self.codec.bits)
    metric = property(lambda self: self.codec.metric)
    qjl = property(lambda self: self.codec.qjl)
    estimator = property(lambda self: self.codec.estimator)
    rotation = property(lambda self: self.codec.rotation.kind)
    code_size = property(lambda self: self.codec.code_size)
    center = property(lambda self: self.codec.center)
    ntotal = property(lambda self: self._store.n)

    @property
    def nbytes(self) -> int:
        """Bytes of every array the index holds in memory.

        Per vector: the codes and stored factors (``code_size`` bytes, the
        blocked layout padded to whole blocks of 32) and any kept raw vectors;
        besides them, the rotation, the codebook, the centring mean and the QJL
        matrix. Nothing derived per vector is kept for searching.
        """
        codec = self.codec
        fixed = [codec.centroids, codec.boundaries]
        fixed += [a for a in codec.rotation.kernel_args() if isinstance(a, np.ndarray)]
        fixed += [a for a in codec.rotation.kernel_args(True) if isinstance(a, np.ndarray)]
        fixed += [a for a in (codec.mean, codec.qjl_matrix) if a is not None]
        if codec.estimator == "pca" and codec.trained:
            fixed += list(codec.books)
        fixed += list(codec.tables)
        unique = {id(a): a for a in fixed}
        return self._store.nbytes + int(sum(a.nbytes for a in unique.values()))

    @property
    def raw_size(self) -> int:
        """Bytes per vector of the kept raw vectors (0 when none are kept)."""
        raw = self._store.arrays.get("raw")
        return 0 if raw is None else int(raw.dtype.itemsize * self.d)

    def __len__(self):
        return self.ntotal

    def __repr__(self):
        return (f"TurboQuantIndex(d={self.d}, bits={self.bits}, metric={self.metric!r}, "
                f"qjl={self.qjl}, rotation={self.rotation!r}, estimator={self.estimator!r}, "
                f"ntotal={self.ntotal}, code_size={self.code_size})")

    # -- building ------------------------------------------------------------
    def train(self, x):
        """Learn what the codes depend on from ``x`` (float (n, d)).

        TurboQuant itself needs no training. With ``center`` on, the mean of
        the vectors is the one statistic kept; the "pca" estimator also learns
        its axes and codebooks (from at most ``tqsearch.pca.TRAIN_ROWS`` rows
        of ``x``). ``add`` trains on its first batch when ``train`` was not
        called. Training after vectors were added is an error (their codes
        depend on it).
        """
        x = as_matrix(x, self.d, name="x")
        if not self.codec.needs_training:
            return
        if self.ntotal:
            raise ValueError("train() must come before add(): the index already holds codes "
                             "relative to its current mean; call reset() first")
        if x.shape[0] == 0:
            raise ValueError("train() needs at least one vector")
        self.codec.fit(x)
        self.is_trained = True

    def add(self, x, *, progress: Callable[[int], None] | None = None):
        """Code and append vectors; their ids are ``ntotal .. ntotal + n - 1``.

        Parameters
        ----------
        x : array_like, float (n, d)
        progress : callable, optional
            Called with the number of rows coded after each chunk.
        """
        x = as_matrix(x, self.d, name="x")
        n = x.shape[0]
        if n == 0:
            return
        if not self.is_trained:
            self.train(x)
        start = self.ntotal
        self._store.reserve(start + n)
        # chunks start on block boundaries of the fast-scan layout, so that they are
        # coded straight into it (the first one may end at the first boundary)
        head = -start % BLOCK
        bounds = [0] + list(range(head if head else ADD_CHUNK, n, ADD_CHUNK)) + [n]
        with _threads(self.n_threads):
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
                if lo == hi:
                    continue
                blocked, first_block = self._store.block_target(start + lo)
                batch = self.codec.encode(x[lo:hi], blocked, first_block)
                raw = None
                if self.keep_vectors:
                    raw = x[lo:hi]
                    if self.metric == "cosine":
                        raw, _ = self.codec.normalize(raw)
                self._store.put(start + lo, batch, raw)
                if progress is not None:
                    progress(hi - lo)

    def reset(self):
        """Remove every vector (the centering mean, if any, is kept)."""
        self._store = CodeStore(self.codec, self.keep_vectors)

    # -- codec calls -----------------------------------------------------------
    def sa_code_size(self) -> int:
        """Bytes per vector of ``sa_encode`` (faiss's name for ``code_size``)."""
        return self.code_size

    def sa_encode(self, x) -> np.ndarray:
        """Codes of ``x`` as uint8 (n, code_size) rows, without adding them."""
        x = as_matrix(x, self.d, name="x")
        self._check_trained("sa_encode")
        return self.codec.to_bytes(self.codec.encode(x))

    def _check_trained(self, call):
        if not self.is_trained:
            what = ("its trained axes and codebooks" if self.estimator == "pca"
                    else "the centring mean")
            raise ValueError(f"{call} needs {what}: call train(x) (or add vectors) first"
                             + ("" if self.estimator == "pca"
                                else ", or build the index with center=False"))

    def sa_decode(self, codes) -> np.ndarray:
        """Reconstructions float32 (n, d) of uint8 (n, code_size) codes."""
        self._check_trained("sa_decode")
        codes = np.asarray(codes)
        if codes.dtype != np.uint8:
            raise TypeError(f"codes must be uint8, got {codes.dtype}")
        if codes.ndim != 2 or codes.shape[1] != self.code_size:
            raise ValueError(
                f"codes must have shape (n, {self.code_size}) for this index, got {codes.shape}")
        return self.codec.decode(self.codec.from_bytes(codes))

    def reconstruct_n(self, start=0, n=None) -> np.ndarray:
        """Reconstructions of stored vectors ``start .. start + n - 1`` (all by default)."""
        if n is None:
            n = self.ntotal - start if isinstance(start, numbers.Integral) else 0
        for value, name in ((start, "start"), (n, "n")):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"reconstruct_n: {name} must be an integer, got {value!r}")
        if start < 0 or n < 0 or start + n > self.ntotal:
            raise ValueError(f"reconstruct_n: range start={start}, n={n} is outside "
                             f"0..{self.ntotal}")
        stop = start + n
        return self.codec.decode(self._store.rows(start, stop))

    def codes(self) -> np.ndarray:
        """All stored codes as uint8 (ntotal, code_size) rows (a copy)."""
        return self.codec.to_bytes(self._store.rows(0, self.ntotal))

    # -- search --------------------------------------------------------------
    def set_threads(self, n_threads: int | None):
        """Threads used by add and search (None: all cores)."""
        self.n_threads = None if n_threads is None else check_positive_int(n_threads,
                                                                            "n_threads")

    def search(self, xq, k, *, n_threads=None, rerank=None, subset=None):
        """Find the ``k`` best stored vectors of each query.

        Parameters
        ----------
        xq : array_like, float (nq, d)
        k : int
        n_threads : int, optional
            Threads for this call (default: ``set_threads`` value, else all cores).
        rerank : float, optional
            Re-score ``ceil(rerank * k)`` candidates exactly from the kept raw
            vectors (needs ``keep_vectors``); ``None`` or 0 scores codes only.
        subset : tuple (start, stop), optional
            Scan only stored vectors ``start .. stop - 1`` (ids stay global).

        Returns
        -------
        D : float32 (nq, k)
            Scores, best first: inner products ("ip"), cosine similarities
            ("cosine") or squared distances ("l2").
        I : int64 (nq, k)
            Ids, padded with -1 where fewer than ``k`` vectors exist.
        """
        k = check_k(k)
        # finiteness is checked below: by the compiled call itself on the one-call path
        xq = as_matrix(xq, self.d, name="xq", check_finite=False)
        if n_threads is not None:
            n_threads = check_positive_int(n_threads, "n_threads")
        factor = _check_rerank(rerank, "raw" in self._store.arrays)
        start, stop = _check_subset(subset, self.ntotal)
        nq = xq.shape[0]
        if nq == 0:
            return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        threads = n_threads or self.n_threads
        k_scan = min(max(k, int(np.ceil(factor * k))), max(stop - start, 1)) if factor else k
        # a few queries run in one compiled call (which leaves the pool alone when it
        # scans on this thread only)
        if nq <= SERIAL_MAX_ROWS and not factor and stop > start and self._scans_blocks():
            found = self._search_few(xq, k, start, stop, threads)
            if found is not None:
                return found
        check_finite(xq, "xq")
        # a few queries on one thread run serial kernels only: no need to set the pool
        serial = threads == 1 and nq <= SERIAL_MAX_ROWS and not factor
        with _threads(threads, serial) as pool:
            y, y_sign, sq_norms = self.codec.prepare_queries(xq)
            scores, labels = self._scan(y, y_sign, k_scan, start, stop, pool.count)
            if factor:
                queries = xq
                if self.metric == "cosine":
                    queries, _ = self.codec.normalize(xq)
                scores = np.empty_like(scores)
                raw = self._store.arrays["raw"]
                none = np.empty((0, 0), dtype=np.float32)
                if raw.dtype == np.float16:  # the kernel converts the bits itself
                    rerank_exact(none, raw.view(np.uint16), queries, labels,
                                 self.metric == "l2", scores)
                else:
                    rerank_exact(raw, none.view(np.uint16), queries, labels,
                                 self.metric == "l2", scores)
                # exact similarities are of the raw (uncentred) vectors
                sq_norms = np.einsum("ij,ij->i", queries, queries).astype(np.float32)
        D, I = finalize_topk(scores, labels, k, sq_norms, self._to_metric(bool(factor)))
        if self.codec.center and self.codec.metric == "cosine":
            _zero_queries_score_zero(xq, D, I)
        return D, I

    def _search_few(self, xq, k, start, stop, threads):
        """:meth:`search` of a few queries in one compiled call
        (:func:`tqsearch.kernels.query.search_few`: the same kernels), on
        ``threads`` threads (None: numba's count) where a query's codes split
        into ranges, else on this one.

        Returns ``(D, I)``, or None when a query is not finite (its squared
        norm is not: the caller's checks then say what is wrong).
        """
        nq = xq.shape[0]
        D = np.empty((nq, k), dtype=np.float32)
        I = np.empty((nq, k), dtype=np.int64)
        before, after = self._scan_inputs()[4]
        if threads == 1 or _chunks(nq, numba.config.NUMBA_NUM_THREADS, stop - start) == 1:
            ok = search_few(xq, *before, start, stop, 1, *after, D, I)  # no pool to set
        else:
            with _threads(threads) as pool:
                n_chunks = _chunks(nq, pool.count, stop - start)
                ok = search_few(xq, *before, start, stop, n_chunks, *after, D, I)
        return (D, I) if ok else None

    def _to_metric(self, exact):
        """How ranking similarities become the metric's scores: a ``FORM_*`` of
        :mod:`tqsearch.results` (empty slots get -inf, or +inf for "l2")."""
        if self.metric == "l2":
            return FORM_L2
        if self.metric == "cosine" and self.codec.distance_form and not exact:
            # sim = 2 <q', x'> - ||x'||^2 on centred unit vectors: cos = 1 - ||q - x||^2 / 2
            return FORM_COSINE
        return FORM_SIMILARITY

    def _scan(self, y, y_sign, k, start, stop, threads):
        """Run the scan kernel on vectors ``start:stop`` with ``threads`` threads;
        returns unsorted candidate heaps."""
        nq = y.shape[0]
        store, codec = self._store, self.codec
        n_chunks = _chunks(nq, threads, stop - start)
        out_s = np.empty((nq, n_chunks, k), dtype=np.float32)
        out_i = np.empty((nq, n_chunks, k), dtype=np.int64)
        if stop > start and self._scans_blocks():
            grouped = nq >= 2 * threads
            fields, tables, tiles = self._scan_inputs()[:3]
            args = (store.codes, start, stop, *fields, y, *tables, n_chunks, grouped, *tiles,
                    out_s, out_i)
            if threads == 1 or nq * n_chunks == 1:
                scan_blocked_topk_serial(*args)  # no thread-pool launch for one task
            else:
                # tasks handed out one at a time as threads free up: a core slowed
                # by other work does not hold the batch back (static split: ~2 % slower)
                with numba.parallel_chunksize(1):
                    scan_blocked_topk(*args)
        elif stop > start and self._scans_bytes():
            batch = store.rows(start, stop)
            form, fc_max = self._scan_inputs()[0][2:4]
            scan_rowdot(batch.codes, batch.norms, batch.gains, form, fc_max, y, y_sign,
                        codec.centroids, codec.index_bits, codec.mode, codec.distance_form,
                        n_chunks, start, out_s, out_i)
        else:
            batch = store.rows(start, stop)
            scan_topk(batch.codes, batch.norms, batch.gains, y, y_sign, codec.centroids,
                      codec.index_bits, codec.mode, codec.distance_form, n_chunks, start,
                      out_s, out_i)
        return out_s.reshape(nq, -1), out_i.reshape(nq, -1)

    def _scans_bytes(self) -> bool:
        """Whether row-major codes (5-8 bits, QJL) are scored as int8 dot products
        here (:func:`tqsearch.kernels.rowdot.scan_rowdot`; CPUs without AVX-512
        VNNI and VBMI take the float row scan)."""
        return DOT_AVAILABLE and self._store.layout == "rows"

    def _scans_blocks(self) -> bool:
        """Whether the blocked scan reads this index's codes here: always for the
        nibble layout, for 3-bit codes only where their int8 engine runs (else
        their rows are scanned: the portable path)."""
        layout = self._store.layout
        return layout == "blocked" or (layout == "triplets"
                                       and self._scan_inputs()[2][1] == ENGINE_DOT3)

    def _scan_inputs(self):
        """The blocked scan's arguments that depend on the index alone, cached until
        the stored vectors change (the filter's constants take a pass over the norms).

        Returns ``(fields, tables, tiles, query, call)``: the candidate filter's
        inputs (:func:`filter_fields`) and the stored norms and gains; what the
        query tables are built from; the tile size and the scan engine
        (:func:`scan_engine`); how queries are prepared; and the arguments of
        :meth:`_search_few`'s compiled call before and after ``start, stop, n_chunks``.
        """
        store, codec = self._store, self.codec
        arrays = store.arrays
        codes, norms, gains = store.codes, arrays.get("norms"), arrays.get("gains")
        cached = self._scan_cache
        # a single query pays for this check: plain identity tests, no loops
        if (cached is not None and cached[0] == store.n and cached[1] is codes
                and cached[2] is norms and cached[3] is gains):
            return cached[4]
        norms_f, gains_f = store.field("norms"), store.field("gains")
        coords, books = codec.tables
        fields = (*filter_fields(norms_f, gains_f, store.n, codec.mode, codec.distance_form),
                  norms_f, gains_f)
        tables = (codec.centroids, codec.index_bits, coords, books, codec.mode,
                  codec.distance_form)
        tiles = (tile_blocks_for(codes), scan_engine(codec.index_bits, books))
        query = (codec.metric == "cosine", codec.mean if codec.center else _NO_MEAN,
                 *codec.rotation.query_args())
        call = ((*query, codes),
                (*fields, *tables, *tiles, self._to_metric(False),
                 codec.center and codec.metric == "cosine"))
        inputs = (fields, tables, tiles, query, call)
        self._scan_cache = (store.n, codes, norms, gains, inputs)
        return inputs

    def _filter_fields(self):
        """What the blocked scan's candidate filter reads (:func:`filter_fields`)."""
        return self._scan_inputs()[0][:4]



_NO_MEAN = np.empty(0, dtype=np.float32)

# Fewest codes a thread scans of one query's (a range's setup and merge cost more
# below that).
_CHUNK_MIN = 4096


def _chunks(nq, threads, n):
    """Ranges each of ``nq`` queries' ``n`` codes split into for ``threads`` threads."""
    return max(1, min(threads // nq, n // _CHUNK_MIN)) if nq < threads else 1


def _zero_queries_score_zero(xq, D, I):
    """A zero query has no direction: cosine 0 with everything, by convention."""
    live = xq.any(axis=1)
    if not live.all():
        zero = ~live
        D[zero] = np.where(I[zero] >= 0, np.float32(0), D[zero])


class _threads:
    """Context manager setting numba's thread count for a call.

    ``count`` is the count the call should use. With ``serial`` (the call runs
    serial kernels only when ``count`` is 1) the pool is left alone: setting
    the count costs more than a small query.
    """

    def __init__(self, n, serial=False):
        self.n = n
        self.serial = serial

    def __enter__(self):
        if self.serial and self.n == 1:  # nothing to look up or set
            self.count, self.changed = 1, False
            return self
        self.previous = numba.get_num_threads()
        want = self.previous if self.n is None else min(self.n, numba.config.NUMBA_NUM_THREADS)
        self.count = want
        self.changed = want != self.previous and not (self.serial and want == 1)
        if self.changed:
            numba.set_num_threads(want)
        return self

    def __exit__(self, *exc):
        if self.changed:
            numba.set_num_threads(self.previous)


def _check_rerank(rerank, has_raw) -> float:
    if rerank is None or rerank == 0:
        return 0.0
    if isinstance(rerank, bool) or not isinstance(rerank, numbers.Real) or rerank < 1:
        raise ValueError(f"rerank must be a number >= 1 (candidates per result), got {rerank!r}")
    if not has_raw:
        raise ValueError(
            "rerank needs the original vectors: build the index with "
            "keep_vectors='float32' or 'float16'")
    return float(rerank)


def _check_subset(subset, ntotal):
    if subset is None:
        return 0, ntotal
    try:
        start, stop = (int(v) for v in subset)
    except (TypeError, ValueError):
        raise ValueError(f"subset must be a (start, stop) pair, got {subset!r}") from None
    if not 0 <= start <= stop <= ntotal:
        raise ValueError(f"subset {subset!r} is outside 0..{ntotal}")
    return start, stop
