"""Models that stages use (encoders, cross-encoders): how they are named and identified.

Only :class:`ModelSpec` lives here so far; loading code arrives with the stages that need
it and imports its libraries (torch, sentence-transformers) lazily.
"""

from retrievo.models.spec import ModelSpec

__all__ = ["ModelSpec"]
