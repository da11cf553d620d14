"""Query rewriters: stages that turn queries, or a first-stage ranking, into new queries.

A rewriter gives :class:`~retrievo.types.Queries`, with new text or with weighted terms
(:attr:`~retrievo.types.Queries.terms`) that a following retriever scores, e.g.
``bm25 >> rm3 >> bm25`` (:mod:`retrievo.rewrite.rm3`). Nothing is imported here: each
method lives in its own module, loaded only when a pipeline names it.
"""
