"""Helpers of the service tests (a module of its own, imported by name, so it can never be
confused with another folder's ``conftest``)."""

from __future__ import annotations

import threading

from retrievo.pipeline import Reader
from retrievo.types import Answers, Document

ANIMALS = ["cat", "dog", "horse", "otter", "zebra", "falcon", "salmon", "beetle"]


def corpus(n: int = 40) -> list[Document]:
    """Documents whose words are known: doc ``a{i}`` mentions animal ``i % 8`` running or sleeping."""
    docs = []
    for i in range(n):
        animal = ANIMALS[i % len(ANIMALS)]
        verb = "running" if i % 2 else "sleeping"
        docs.append(Document(f"a{i}", f"The {animal} number {i} was {verb} near the river bank all day long.",
                             title=f"{animal.title()} {i}"))
    return docs



class ScriptedReader(Reader):
    """Answers "<n> passages; first: <id>" citing the top two, in pieces; with a gate it
    waits on it between pieces, so a test can prove pieces reach the client before the
    reader has finished."""

    name = "scripted_reader"
    gate: threading.Event | None = None
    pieces_sent: list[str] = []

    def __init__(self, index, streaming: bool = True):
        self.index = index
        self.streaming = streaming

    def _answer(self, rankings):
        r = rankings[0]
        ids = [str(d) for d in r.doc_ids[:2].tolist()]
        pieces = [f"{len(r)} passages", "; first: ", ids[0] if ids else "none"]
        return pieces, Answers.from_lists(rankings.queries, ["".join(pieces)], [ids], contexts=rankings)

    def transform(self, inp):
        return self._answer(inp)[1]

    def __getattr__(self, name):
        if name == "stream_answer" and self.__dict__.get("streaming"):
            return self._stream
        raise AttributeError(name)

    def _stream(self, rankings):
        pieces, answers = self._answer(rankings)
        for i, piece in enumerate(pieces):
            if i and ScriptedReader.gate is not None:
                assert ScriptedReader.gate.wait(30), "the test never opened the gate"
            ScriptedReader.pieces_sent.append(piece)
            yield piece
        yield answers

    def spec(self, resources: bool = True) -> str:
        return "scripted_reader" if self.streaming else "scripted_reader(streaming=false)"
