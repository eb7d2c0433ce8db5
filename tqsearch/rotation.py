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

from .kernels.rotate import hadamard_forward, hadamard_inverse, matvec_rows

__all__ = ["Rotation", "DenseRotation", "HadamardRotation", "make_rotation", "ROTATIONS"]

ROTATIONS = ("hadamard", "dense")

# Salt of the rotations' random streams: a seed's stream must not be the one a
# user draws data from with the same seed (default_rng(0) for both would make
# the data correlate with the rotation's rows).
_STREAM = 0x5251

# Up to this dimension a d x d product costs less than the transform's scattered
# butterflies, so the Hadamard rotation is applied through its (exact) matrix.
_MATRIX_MAX_D = 1024

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

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Rotate rows. ``x``: float32 (n, d), C-contiguous -> float32 (n, d)."""
        raise NotImplementedError

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Undo :meth:`apply`. ``y``: float32 (n, d) -> float32 (n, d)."""
        raise NotImplementedError

    def matrix_t_or_none(self) -> np.ndarray | None:
        """Transposed d x d matrix when the rotation is applied as a product, else None."""
        return None

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
        self._matrix_t = np.ascontiguousarray(self.matrix.T)

    def apply(self, x):
        return _matvec(x, self._matrix_t)

    def inverse(self, y):
        return _matvec(y, self.matrix)

    def matrix_t_or_none(self):
        return self._matrix_t

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
        self._matrix = self._matrix_t = None
        if self.d <= _MATRIX_MAX_D:
            eye = np.eye(self.d, dtype=np.float32)
            self._matrix_t = self._transform(eye)  # rows of I rotated = columns of M
            self._matrix = np.ascontiguousarray(self._matrix_t.T)

    def _transform(self, x):
        out = np.empty_like(x)
        hadamard_forward(x, self.signs, self.perms, self.offsets, self.block, out)
        return out

    def apply(self, x):
        if self._matrix is not None:
            return _matvec(x, self._matrix_t)
        return self._transform(x)

    def inverse(self, y):
        if self._matrix is not None:
            return _matvec(y, self._matrix)
        out = np.empty_like(y)
        hadamard_inverse(y, self.signs, self.perms, self.offsets, self.block, out)
        return out

    def matrix_t_or_none(self):
        return self._matrix_t

    def state(self):
        return {"signs": self.signs, "perms": self.perms, "offsets": self.offsets}


def _matvec(x, matrix):
    out = np.empty_like(x)
    matvec_rows(x, matrix, out)
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
