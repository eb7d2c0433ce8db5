"""Shared fixtures: synthetic data that is not completely random, and the shipped sample."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

# The real datasets used by the slow recall tests live beside the checkout;
# they are not part of the project, so every test using them skips without them.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class SyntheticDataset:
    """A clustered Gaussian mixture with anisotropic clusters and varied norms.

    Not completely random but still challenging: vectors lie near a few
    cluster centres, each cluster is stretched along its own random directions
    with a decaying spectrum (so most of the variance lives in a few axes and
    neighbours are close together), and norms vary by a factor of a few, which
    matters for "ip" and "l2". Queries come from the same mixture.

    Parameters
    ----------
    d, nb, nq : int
        Dimension, database size, number of queries.
    n_clusters : int
    seed : int

    Attributes
    ----------
    xb : float32 (nb, d)
    xq : float32 (nq, d)
    """

    def __init__(self, d, nb, nq, *, n_clusters=16, seed=1234):
        self.d, self.nb, self.nq = d, nb, nq
        rng = np.random.default_rng([seed, d, nb, nq])
        centres = rng.standard_normal((n_clusters, d))
        spectrum = 1.0 / np.sqrt(1.0 + np.arange(d))  # decaying per-axis spread
        # each cluster stretched along its own axes of one random frame
        spreads = np.stack([rng.permutation(spectrum) for _ in range(n_clusters)])
        # a random orthogonal frame: product of Householder reflections (no LAPACK)
        mirrors = rng.standard_normal((4, d))
        mirrors /= np.linalg.norm(mirrors, axis=1, keepdims=True)

        def draw(n):
            label = rng.integers(n_clusters, size=n)
            noise = rng.standard_normal((n, d)) * spreads[label]
            for v in mirrors:
                noise -= 2.0 * np.outer(noise @ v, v)
            x = centres[label] + noise
            x *= np.exp(0.3 * rng.standard_normal(n))[:, None]  # norms vary
            return np.ascontiguousarray(x, dtype=np.float32)

        # (left writable: read-only inputs would make Numba compile a second
        # specialization of every kernel; tests copy before modifying)
        self.xb = draw(nb)
        self.xq = draw(nq)

    def exact_scores(self, metric: str) -> np.ndarray:
        """Exact similarities ("ip", "cosine") or squared distances ("l2"), float64 (nq, nb)."""
        xb = self.xb.astype(np.float64)
        xq = self.xq.astype(np.float64)
        if metric == "cosine":
            xb = xb / np.linalg.norm(xb, axis=1, keepdims=True)
            xq = xq / np.linalg.norm(xq, axis=1, keepdims=True)
        ip = xq @ xb.T
        if metric == "l2":
            return (xq**2).sum(1)[:, None] + (xb**2).sum(1)[None, :] - 2 * ip
        return ip

    def ground_truth(self, k: int, metric: str) -> np.ndarray:
        """Exact top-k ids, int64 (nq, k)."""
        s = self.exact_scores(metric)
        key = s if metric == "l2" else -s
        return np.argsort(key, axis=1, kind="stable")[:, :k]


@functools.lru_cache(maxsize=16)
def synthetic_dataset(d=64, nb=2000, nq=50, seed=1234) -> SyntheticDataset:
    """Cached :class:`SyntheticDataset` (shared: do not modify its arrays)."""
    return SyntheticDataset(d, nb, nq, seed=seed)


@functools.lru_cache(maxsize=16)
def _unit_vectors(n, d, seed):
    x = np.random.default_rng([seed, n, d, 77]).standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def unit_vectors(n, d, seed=0) -> np.ndarray:
    """``n`` uniformly random unit vectors, float32 (n, d) (shared: do not modify).

    The stream is keyed on (seed, n, d) and an offset, so it never coincides
    with the draw of an index rotation made from the same small seed.
    """
    return _unit_vectors(n, d, seed)


@pytest.fixture
def synthetic():
    """Factory ``synthetic(d=64, nb=2000, nq=50, seed=1234) -> SyntheticDataset`` (cached)."""
    return synthetic_dataset


@pytest.fixture
def units():
    """Factory ``units(n, d, seed=0)`` of random unit vectors (cached)."""
    return unit_vectors


@functools.lru_cache(maxsize=1)
def _load_sample():
    from tqsearch.datasets import DatasetError, load_dataset, sample_path

    try:
        return load_dataset(sample_path(), download=False, progress=False), None
    except DatasetError as exc:
        return None, str(exc)


@pytest.fixture
def sample_dataset():
    """The small real dataset shipped with the project (skips if it is not installed)."""
    ds, why = _load_sample()
    if ds is None:
        pytest.skip(f"shipped sample not available: {why}")
    return ds


@pytest.fixture
def shared_data() -> Path:
    """Folder of the real benchmark datasets (skips when absent)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not present at {SHARED_DATA}")
    return SHARED_DATA
