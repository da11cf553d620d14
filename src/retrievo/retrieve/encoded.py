"""Keeping a cache of encodings in step with the lexical index it was computed from.

``dense``, ``splade``, ``maxsim`` and ``muvera`` encode the documents of a lexical index
once and keep the result beside it (dense vectors, SPLADE impacts, token vectors). When
the lexical index changes, the cache is brought up to date rather than rebuilt: documents
it lacks are encoded and added, documents the index no longer has are deleted. Comparing
ids is not enough, though: an upsert replaces a document's text under the *same* id, and
a cache synced by id would keep encoding the old text. So every cache records, as a
metadata column of its own document store, a hash of the text each encoding was computed
from (:data:`CONTENT_FIELD`); a sync re-encodes the documents whose current text hashes
differ and replaces them in one upsert. Caches written before hashes were recorded have
no such column and are synced by id only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: the metadata column holding a hash of the text each cached encoding was computed from
CONTENT_FIELD = "retrievo_encoded_text"


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def content_hashes(texts: Sequence[str]) -> list[dict[str, str]]:
    """One metadata record per text: ``{CONTENT_FIELD: hash}`` (what a cache stores)."""
    return [{CONTENT_FIELD: content_hash(t)} for t in texts]


def encoded_hashes(cache: Any) -> dict[str, str]:
    """id -> content hash recorded for each live document of ``cache`` (any index whose
    document store keeps metadata columns); empty for a cache written without hashes."""
    out: dict[str, str] = {}
    for part, lv in zip(cache.doc_parts, cache.lives):
        cols = part.columns
        codes = None if cols is None else cols.fields.get(CONTENT_FIELD, {}).get("keyword")
        if codes is None:
            continue
        values = cols.values[(CONTENT_FIELD, "keyword")]
        for local, (doc_id, code) in enumerate(zip(part.ids.tolist(), np.asarray(codes).tolist())):
            if code >= 0 and (lv is None or lv[local]):
                out[doc_id] = values[code]
    return out


def plan_sync(cache: Any, lex_ids: Sequence[str], text_at: Callable[[int], str]) -> tuple[list[int], list[str]]:
    """What makes ``cache`` hold exactly the documents ``lex_ids`` (the lexical index's
    live ids, in order; ``text_at(i)`` is the stored text of ``lex_ids[i]``): the positions
    to encode (new ids, and ids whose text changed since they were encoded) and the cached
    ids to delete."""
    have = cache.docstore.id_map()
    recorded = encoded_hashes(cache)
    todo = [i for i, d in enumerate(lex_ids)
            if d not in have or (d in recorded and content_hash(text_at(i)) != recorded[d])]
    gone = sorted(set(have) - set(lex_ids))
    return todo, gone


__all__ = ["CONTENT_FIELD", "content_hash", "content_hashes", "encoded_hashes", "plan_sync"]
