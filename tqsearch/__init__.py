"""tqsearch: vector search on TurboQuant codes.

Vectors are rotated with a seeded random rotation, every coordinate is coded
with the Lloyd-Max codebook of the rotated-coordinate law, and queries are
scored against the codes by a Numba engine. The API follows faiss::

    index = tqsearch.TurboQuantIndex(d, bits=4, metric="cosine")
    index.add(xb)
    D, I = index.search(xq, k)
    tqsearch.write_index(index, "vectors.tqs")
"""

from ._version import __version__
from .index import TurboQuantIndex
from .io import IndexFormatError, read_index, write_index
from .results import merge_results

__all__ = [
    "__version__",
    "TurboQuantIndex",
    "write_index",
    "read_index",
    "IndexFormatError",
    "merge_results",
]
