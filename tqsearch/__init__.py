"""tqsearch: vector search on TurboQuant codes."""
from ._version import __version__

