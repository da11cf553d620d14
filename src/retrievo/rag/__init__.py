"""Readers: rankings → answers with cited document ids (one method per module; the shared
context building, citation mapping and fallbacks are in :mod:`retrievo.rag.base`)."""
