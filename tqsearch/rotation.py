"""Seeded random rotations of R^d.

Two families, both exactly orthogonal and keeping exactly ``d`` coordinates:

* :class:`DenseRotation` -- a Haar-random orthogonal matrix (QR of a Gaussian
  matrix with the sign fix), as in the TurboQuant paper; ``O(d^2)`` per vector.
* :class:`HadamardRotation` -- rounds of random signs, an orthonormal
  Walsh-Hadamard transform on a power-of-two block and a random permutation;
  ``O(d log d)`` per vector. When ``d`` is not a power of two the block is the
  largest power of two ``p <= d`` and successive rounds transform the leading
  and trailing ``p`` coordinates, so blocks overlap and, with the
  permutations, every coordinate is mixed with every other while no padding
  (no extra bytes per vector) is introduced.

A rotation is fully described by its arrays (:meth:`state`), which the index
file stores so that reading never depends on a random generator's stream.
"""

from __future__ import annotations

import numpy as np

from .kernels.rotate import project_rows, project_rows_serial, rotate_rows, rotate_rows_serial

__all__ = ["Rotation", "DenseRotation", "HadamardRotation", "make_rotation", "multiply_rows",
           "ROTATIONS"]

ROTATIONS = ("hadamard", "dense")

# Salt of the rotations' random streams: a seed's stream must not be the one a
# user draws data from with the same seed (default_rng(0) for both would make
# the data correlate with the rotation's rows).
_STREAM = 0x5251

# Up to this many rows a rotation runs without threads: starting them costs more.
SERIAL_MAX_ROWS = 16

# Up to this dimension the Hadamard rotation is applied through its (exact)
# matrix: a d x d product of tiles costs less than the rounds' transforms.
_MATRIX_MAX_D = 64

# Rounds of the transform. With d a power of two, three rounds bring the entries
# of the rotation (and so the coordinates of one-hot, sparse or constant inputs)
# within sampling noise of a Haar rotation's law. Otherwise each round mixes
# only a block of p < d coordinates, and twelve rounds are needed for the same
# (measured by the entries' fourth moment, d^2 E[R_ij^4] -> 3d / (d + 2)).
_HADAMARD_ROUNDS = 3
_HADAMARD_ROUNDS_OVERLAPPING = 12


class Rotation:
    """Interface: ``apply`` rotates rows, ``inverse`` undoes it."""

    kind: str
    d: int

    def kernel_args(self, inverse: bool = False) -> tuple:
        """The rotation as the kernels take it (:func:`tqsearch.kernels.rotate.rotate_rows`).

        Returns ``(pre, matrix, signs, factors, perms, offsets, block)`` of the
        rotation (``inverse=False``) or of its inverse:
        a rotation applied as a product passes its float32 (d, d) matrix (the
        transpose for the inverse) and empty round arrays; Hadamard rounds pass
        a (0, 0) matrix. ``pre`` (float32 (d,)) multiplies the input first.
        """
        raise NotImplementedError

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Rotate rows. ``x``: float32 (n, d), C-contiguous -> float32 (n, d)."""
        return self._rotate(x, False)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Undo :meth:`apply`. ``y``: float32 (n, d) -> float32 (n, d)."""
        return self._rotate(y, True)

    def apply_queries(self, x: np.ndarray) -> np.ndarray:
        """:meth:`apply` for queries: each row's result does not depend on the batch."""
        return self._rotate(x, False)

    def query_args(self) -> tuple:
        """Kernel arguments of :meth:`apply_queries`: :meth:`kernel_args` and the
        matrix transposed when queries are rotated by products (else (0, 0))."""
        return (*self.kernel_args(), _NO_COLUMNS)

    def _rotate(self, x, inverse):
        out = np.empty_like(x)
        kernel = rotate_rows if x.shape[0] > SERIAL_MAX_ROWS else rotate_rows_serial
        kernel(x, *self.kernel_args(inverse), inverse, out)
        return out

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that reproduce the rotation exactly (see :func:`from_state`)."""
        raise NotImplementedError


class DenseRotation(Rotation):
    """Haar-random orthogonal matrix ``Q``; ``apply(x) = x @ Q.T``.

    Parameters
    ----------
    d : int
    seed : int
    matrix : ndarray of float32, shape (d, d), optional
        Use this matrix instead of drawing one (when reading an index).
    """

    kind = "dense"

    def __init__(self, d: int, seed: int = 0, *, matrix: np.ndarray | None = None):
        self.d = int(d)
        if matrix is None:
            rng = np.random.default_rng([seed, _STREAM])
            g = rng.standard_normal((self.d, self.d))
            q, r = np.linalg.qr(g)
            q *= np.sign(np.diag(r))  # makes the draw Haar-distributed
            matrix = q
        self.matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        self._args = _product_args(self.matrix)

    def kernel_args(self, inverse=False):
        return self._args[inverse]

    def query_args(self):
        return (*self.kernel_args(), self._args[1][1])

    def apply_queries(self, x):
        # a product per row: the tile kernel would spend eight lanes on a single query
        out = np.empty_like(x)
        kernel = project_rows if x.shape[0] > SERIAL_MAX_ROWS else project_rows_serial
        kernel(x, self._args[1][1], out)  # the inverse's matrix is this one transposed
        return out

    def state(self):
        return {"matrix": self.matrix}


class HadamardRotation(Rotation):
    """Randomized Walsh-Hadamard rotation on overlapping power-of-two blocks.

    Parameters
    ----------
    d : int
    seed : int
    signs, perms, offsets : ndarray, optional
        The round parameters (when reading an index).
    """

    kind = "hadamard"

    def __init__(
        self,
        d: int,
        seed: int = 0,
        *,
        signs: np.ndarray | None = None,
        perms: np.ndarray | None = None,
        offsets: np.ndarray | None = None,
    ):
        self.d = int(d)
        self.block = 1 << (self.d.bit_length() - 1)
        if signs is None:
            rng = np.random.default_rng([seed, _STREAM])
            rounds = _HADAMARD_ROUNDS if self.block == self.d else _HADAMARD_ROUNDS_OVERLAPPING
            signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(rounds, self.d))
            perms = np.stack([rng.permutation(self.d) for _ in range(rounds)])
            # alternate leading / trailing block; identical when d is a power of two
            offsets = np.array([0 if r % 2 == 0 else self.d - self.block for r in range(rounds)])
        self.signs = np.ascontiguousarray(signs, dtype=np.float32)
        self.perms = np.ascontiguousarray(perms, dtype=np.int64)
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        self.factors = self._row_factors()
        self._args = (
            (self.signs[0], _NO_MATRIX, self.signs, self.factors, self.perms, self.offsets,
             self.block),
            (np.ones(self.d, np.float32), _NO_MATRIX, self.signs, self.factors, self.perms,
             self.offsets, self.block),
        )
        if self.d <= _MATRIX_MAX_D:
            eye = np.eye(self.d, dtype=np.float32)
            self._args = _product_args(self._rotate(eye, False).T)  # columns: rotated basis

    def _row_factors(self):
        """float32 (rounds, d): what row ``j`` is multiplied by as round ``r`` permutes.

        The transform's ``1 / sqrt(p)`` for rows that came from the round's
        block, times the next round's sign: the kernels apply both while moving
        rows, so no pass over the data is spent on them.
        """
        rounds = self.signs.shape[0]
        factors = np.ones((rounds, self.d), dtype=np.float64)
        for r in range(rounds):
            src = self.perms[r]
            inside = (src >= self.offsets[r]) & (src < self.offsets[r] + self.block)
            factors[r, inside] = 1.0 / np.sqrt(self.block)
            if r + 1 < rounds:
                factors[r] *= self.signs[r + 1]
        return factors.astype(np.float32)

    def kernel_args(self, inverse=False):
        return self._args[inverse]

    def state(self):
        return {"signs": self.signs, "perms": self.perms, "offsets": self.offsets}


_NO_MATRIX = np.empty((0, 0), np.float32)
_NO_ROUNDS = (np.empty((0, 0), np.float32), np.empty((0, 0), np.float32),
              np.empty((0, 0), np.int64), np.empty(0, np.int64), 0)


_NO_COLUMNS = np.empty((0, 0), dtype=np.float32)


def _product_args(matrix):
    """Kernel arguments (forward, inverse) of a rotation applied as ``y = matrix @ x``."""
    d = matrix.shape[0]
    ones = np.ones(d, np.float32)
    forward = np.ascontiguousarray(matrix, dtype=np.float32)
    backward = np.ascontiguousarray(forward.T)
    return (ones, forward, *_NO_ROUNDS), (ones, backward, *_NO_ROUNDS)


def multiply_rows(x: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``x @ matrix.T`` for float32 (n, d) ``x`` and (d, d) ``matrix``, row by row.

    Each row's result is the same whatever else is in the batch (a BLAS product
    may round a single row differently from a batch), so one query gets the
    scores it gets within a batch.
    """
    out = np.empty_like(x)
    kernel = rotate_rows if x.shape[0] > SERIAL_MAX_ROWS else rotate_rows_serial
    kernel(x, *_product_args(matrix)[0], False, out)
    return out


def make_rotation(kind: str, d: int, seed: int) -> Rotation:
    """Draw a rotation of the given kind (``"hadamard"`` or ``"dense"``)."""
    if kind == "hadamard":
        return HadamardRotation(d, seed)
    if kind == "dense":
        return DenseRotation(d, seed)
    raise ValueError(f"unknown rotation {kind!r}: use one of {', '.join(ROTATIONS)}")


def from_state(kind: str, d: int, state: dict[str, np.ndarray]) -> Rotation:
    """Rebuild a rotation from :meth:`Rotation.state` arrays."""
    if kind == "hadamard":
        return HadamardRotation(d, signs=state["signs"], perms=state["perms"],
                                offsets=state["offsets"])
    if kind == "dense":
        return DenseRotation(d, matrix=state["matrix"])
    raise ValueError(f"unknown rotation {kind!r} in index file")
