"""The typed requests and responses of the service: one set of pydantic models for REST
and for the MCP tools (see :mod:`retrievo.server.mcp`), so both speak one schema.

Every field that a client controls has a limit, because the limits are what keep one
request from holding a worker (or the memory of the process) for long: query length,
``k``, documents per write, characters per document, candidates per rerank. Names of
collections and pipelines are plain identifiers that are only ever looked up in the
server's own tables, never joined onto a path.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: what a collection or pipeline name may look like (a lookup key, never a path)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"


class Limits(BaseModel):
    """The request limits. They are fixed (not per server) because they are part of the
    published schema: a client that validates against the OpenAPI document or an MCP tool's
    input schema learns them there."""

    model_config = ConfigDict(frozen=True)
    max_query_chars: int = 2000
    max_k: int = 1000
    max_batch_docs: int = 1000
    max_doc_chars: int = 200_000
    max_candidates: int = 1000
    max_body_bytes: int = 16 * 1024 * 1024
    max_spec_chars: int = 1000


LIMITS = Limits()

_DOC_ID = Field(min_length=1, max_length=512, description="the document's id (any text without control characters)")


def _no_control(value: str) -> str:
    if any(ord(c) < 32 and c not in "\t\n\r" for c in value):
        raise ValueError("control characters are not allowed")
    return value


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchRequest(_Base):
    """``POST /v1/search`` and the MCP ``search`` tool."""

    query: str = Field(min_length=1, max_length=LIMITS.max_query_chars, description="the query text")
    k: int = Field(10, ge=1, le=LIMITS.max_k, description="how many results to return")
    pipeline: str | None = Field(None, min_length=1, max_length=LIMITS.max_spec_chars,
                                 description="a pipeline the server allows, by name or spec (default: its first)")
    collection: str | None = Field(None, pattern=NAME_PATTERN, description="collection name (default: the first)")
    snippets: bool = Field(True, description="include highlighted snippets of the stored text")
    filter: str | None = Field(None, min_length=1, max_length=LIMITS.max_spec_chars,
                               description="a metadata filter every retriever applies before its top-k, e.g. "
                                           "\"year >= 2015 and source in ('pubmed', 'pmc')\"")

    _q = field_validator("query")(_no_control)


class Span(BaseModel):
    """A highlighted range ``[start, end)`` of a snippet (character offsets)."""

    start: int
    end: int


class Hit(BaseModel):
    rank: int
    doc_id: str
    score: float
    title: str = ""
    snippet: str = ""
    highlights: list[Span] = Field(default_factory=list)


class StageCost(BaseModel):
    """One stage's cost record (:class:`retrievo.types.Cost`)."""

    model_config = ConfigDict(extra="allow")
    stage: str
    seconds: float
    queries: int = 0
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    forward_passes: int = 0


class SearchResponse(BaseModel):
    collection: str
    pipeline: str
    generation: int
    query: str
    results: list[Hit]
    costs: list[StageCost]
    took_ms: float


class Candidate(_Base):
    doc_id: str = _DOC_ID
    score: float | None = Field(None, allow_inf_nan=False, description="first-stage score (kept for display)")


class RerankRequest(_Base):
    """``POST /v1/rerank``: a ranked list in (ids of documents stored in the collection),
    a ranked list out, reordered by a pipeline that takes rankings."""

    query: str = Field(min_length=1, max_length=LIMITS.max_query_chars)
    candidates: list[Candidate] = Field(min_length=1, max_length=LIMITS.max_candidates)
    pipeline: str | None = Field(None, min_length=1, max_length=LIMITS.max_spec_chars)
    k: int | None = Field(None, ge=1, le=LIMITS.max_k)
    collection: str | None = Field(None, pattern=NAME_PATTERN)
    snippets: bool = False

    _q = field_validator("query")(_no_control)


class AskRequest(_Base):
    """``POST /v1/ask`` and the MCP ``ask`` tool: run a pipeline whose last stage is a
    reader; the answer streams as server-sent events unless ``stream`` is false."""

    query: str = Field(min_length=1, max_length=LIMITS.max_query_chars)
    pipeline: str | None = Field(None, min_length=1, max_length=LIMITS.max_spec_chars)
    collection: str | None = Field(None, pattern=NAME_PATTERN)
    stream: bool = True

    _q = field_validator("query")(_no_control)


class Citation(BaseModel):
    doc_id: str
    title: str = ""


class AskResponse(BaseModel):
    collection: str
    pipeline: str
    generation: int
    query: str
    answer: str
    citations: list[Citation]
    context: list[Hit]
    costs: list[StageCost]
    took_ms: float


class DocumentIn(_Base):
    doc_id: str = _DOC_ID
    text: str = Field(min_length=1, max_length=LIMITS.max_doc_chars)
    title: str = Field("", max_length=10_000)
    meta: dict[str, Any] = Field(default_factory=dict, description="stored with the document, returned on fetch")

    _id = field_validator("doc_id")(_no_control)

    @field_validator("meta")
    @classmethod
    def _meta_is_storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        """The store writes metadata as UTF-8 JSON: refuse here (422) what it could not write
        (lone surrogates, non-finite numbers) rather than fail the commit (and its batch)."""
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
            text.encode("utf-8")
        except (ValueError, TypeError, UnicodeEncodeError) as exc:
            raise ValueError(f"meta must be plain JSON text ({exc})") from None
        if len(text) > 100_000:
            raise ValueError("meta is limited to 100,000 characters of JSON")
        return value


class AddDocumentsRequest(_Base):
    """``POST /v1/documents``: acknowledged once the documents are durable (fsync'd and
    published as a new generation of the index)."""

    documents: list[DocumentIn] = Field(min_length=1, max_length=LIMITS.max_batch_docs)
    collection: str | None = Field(None, pattern=NAME_PATTERN)
    upsert: bool = Field(False, description="replace documents whose ids exist (one atomic commit) instead of "
                                            "refusing them with 409")


class WriteResponse(BaseModel):
    collection: str
    generation: int = Field(description="the published generation that holds the change")
    added: list[str] = Field(default_factory=list)
    replaced: list[str] = Field(default_factory=list, description="ids an upsert replaced")
    deleted: list[str] = Field(default_factory=list)


class FetchRequest(_Base):
    """The MCP ``fetch_document`` tool (``GET /v1/documents/{doc_id}`` over REST)."""

    doc_id: str = _DOC_ID
    collection: str | None = Field(None, pattern=NAME_PATTERN)


class DocumentOut(BaseModel):
    collection: str
    doc_id: str
    title: str
    text: str
    meta: dict[str, Any]


class PipelineInfo(BaseModel):
    name: str
    spec: str
    gives: Literal["rankings", "answers", "queries"]
    takes: list[str]


class CollectionInfo(BaseModel):
    name: str
    format: str
    generation: int
    documents: int
    writable: bool
    pipelines: list[PipelineInfo]
    open_specs: bool


class ErrorBody(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


__all__ = ["AddDocumentsRequest", "AskRequest", "AskResponse", "Candidate", "Citation", "CollectionInfo",
           "DocumentIn", "DocumentOut", "ErrorResponse", "FetchRequest", "Hit", "LIMITS", "Limits", "NAME_PATTERN",
           "PipelineInfo", "RerankRequest", "SearchRequest", "SearchResponse", "Span", "StageCost", "WriteResponse"]
