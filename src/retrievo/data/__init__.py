"""Reading and writing collections, queries, runs and judgments.

``open_collection(path)`` is the one entry point most code needs: it recognises a BEIR
folder, a single JSONL corpus file or a folder of text/Markdown/HTML files and returns a
streaming :class:`DocumentCollection`; ``read_queries`` and ``read_judgments`` do the same for
query and qrels files. Format-specific readers and writers live in the
submodules (``beir``, ``trec``, ``jsonl``, ``folder``, ``irds``, ``frames``).
"""

from __future__ import annotations

from pathlib import Path

from retrievo.data.beir import (BeirDataset, JsonlCorpus, is_beir_dir, read_beir_qrels,
                                read_queries_jsonl, write_beir)
from retrievo.data.collection import DocumentCollection, batched
from retrievo.data.detect import (detect_qrels_format, detect_queries_format, read_judgments,
                                  read_queries)
from retrievo.data.folder import FOLDER_EXTENSIONS, FolderCollection
from retrievo.data.frames import (documents_from_arrow, documents_from_pandas, documents_to_arrow,
                                  documents_to_pandas)
from retrievo.data.irds import IrDataset, load_ir_dataset
from retrievo.data.jsonl import atomic_writer, iter_jsonl, write_jsonl
from retrievo.data.pydoc_corpus import DEMO_QUERIES, PydocCorpus
from retrievo.data.trec import (read_qrels, read_run, read_topics, read_tsv_queries, write_qrels,
                                write_run, write_tsv_queries)
from retrievo.errors import DataFormatError

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")


def open_collection(path: str | Path) -> BeirDataset | JsonlCorpus | FolderCollection:
    """Open whatever ``path`` holds as a streaming document collection.

    * a folder with ``corpus.jsonl[.gz]`` → :class:`BeirDataset` (also has ``queries``,
      ``qrels`` and ``splits``);
    * a ``.jsonl[.gz]`` file → :class:`JsonlCorpus` (one document per line);
    * a folder of (or a single) ``.txt``/``.md``/``.markdown``/``.html``/``.htm`` file(s)
      → :class:`FolderCollection`, split into passages.

    Raises :class:`DataFormatError` for a missing path or one with nothing readable.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataFormatError("no such file or folder", path)
    if is_beir_dir(path):
        return BeirDataset(path)
    if path.is_file() and path.name.lower().endswith(JSONL_SUFFIXES):
        return JsonlCorpus(path)
    if path.is_dir() or path.name.lower().endswith(FOLDER_EXTENSIONS):
        try:
            return FolderCollection(path)
        except DataFormatError:
            pass
    raise DataFormatError("nothing readable: expected a BEIR folder (corpus.jsonl or corpus.jsonl.gz), "
                          "a .jsonl or .jsonl.gz corpus file, or a folder of "
                          f"{', '.join(FOLDER_EXTENSIONS)} files", path)


__all__ = [
    "DEMO_QUERIES",
    "BeirDataset",
    "DocumentCollection",
    "FolderCollection",
    "IrDataset",
    "JsonlCorpus",
    "PydocCorpus",
    "atomic_writer",
    "batched",
    "detect_qrels_format",
    "detect_queries_format",
    "documents_from_arrow",
    "documents_from_pandas",
    "documents_to_arrow",
    "documents_to_pandas",
    "is_beir_dir",
    "iter_jsonl",
    "load_ir_dataset",
    "open_collection",
    "read_beir_qrels",
    "read_judgments",
    "read_qrels",
    "read_queries",
    "read_queries_jsonl",
    "read_run",
    "read_topics",
    "read_tsv_queries",
    "write_beir",
    "write_jsonl",
    "write_qrels",
    "write_run",
    "write_tsv_queries",
]
