"""On-disk index formats: segments, tombstones, generations, atomic writes."""

from retrievo.index.inverted import FORMAT_VERSION, InvertedIndex
from retrievo.index.segment import Segment

__all__ = ["FORMAT_VERSION", "InvertedIndex", "Segment"]
