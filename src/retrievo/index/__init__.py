"""Indexes on disk and in memory: one life cycle (generations, manifests, atomic publish,
garbage collection, see :mod:`retrievo.index.lifecycle`), one document store
(:mod:`retrievo.index.docstore`), and the formats built on them (:class:`InvertedIndex`).

:func:`open_index` opens any index folder with the reader its manifest names.
"""

from retrievo.index.docstore import DocStore
from retrievo.index.inverted import FORMAT_VERSION, InvertedIndex
from retrievo.index.lifecycle import clear_index_cache, open_index, register_format
from retrievo.index.segment import Segment

__all__ = ["FORMAT_VERSION", "DocStore", "InvertedIndex", "Segment", "clear_index_cache", "open_index",
           "register_format"]
