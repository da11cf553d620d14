"""A user's own folder of notes, docs or saved web pages as a searchable collection.

Files are visited recursively in sorted order (hidden files and folders skipped), their
text extracted (HTML through the stdlib parser) and split into passages, so results point
at the paragraph that matched rather than at a whole file. Ids are stable across runs:
``<relative/path>#<passage number>``, numbered from 1.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from types import MappingProxyType

from retrievo.data.collection import BatchingMixin
from retrievo.errors import DataFormatError
from retrievo.text.chunk import split_passages
from retrievo.types import Document

TEXT_EXTENSIONS = (".txt", ".md", ".markdown")
HTML_EXTENSIONS = (".html", ".htm")
FOLDER_EXTENSIONS = TEXT_EXTENSIONS + HTML_EXTENSIONS

_MARKDOWN_H1 = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


# --------------------------------------------------------------------------------------
# Text extraction
# --------------------------------------------------------------------------------------


class _HtmlText(HTMLParser):
    """Visible text of an HTML page, with block elements turned into blank lines so the
    passage splitter sees the page's paragraphs."""

    SKIP = frozenset({"script", "style", "noscript", "template", "svg"})
    BLOCK = frozenset({"p", "div", "section", "article", "header", "footer", "main", "nav", "aside",
                       "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "dl", "dt", "dd",
                       "table", "tr", "blockquote", "pre", "figure", "figcaption", "hr", "form",
                       "details", "summary", "body", "address"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self._skip_depth = 0
        self._in_title = False
        self._in_pre = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self.SKIP:
            self._skip_depth += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in self.BLOCK:
            self.parts.append("\n\n")
            if tag == "pre":
                self._in_pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self.SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n\n")
            if tag == "pre":
                self._in_pre = max(0, self._in_pre - 1)

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
        elif not self._skip_depth:
            # Outside <pre>, source line breaks are layout, not structure.
            self.parts.append(data if self._in_pre else re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> tuple[str, str]:
    """``(title, text)`` of an HTML page: the ``<title>`` and the visible body text with
    one blank line between blocks; ``<script>``/``<style>`` content is dropped."""
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    title = " ".join("".join(parser.title_parts).split())
    return title, text


def markdown_title(text: str) -> str:
    """The first level-1 ``# heading`` of a Markdown text, or ``""``."""
    match = _MARKDOWN_H1.search(text)
    return match.group(1).strip() if match else ""


def read_text_file(path: Path) -> tuple[str, str]:
    """``(title, text)`` of one supported file; bytes that are not UTF-8 become U+FFFD
    rather than failing the whole collection. The title falls back to the file stem."""
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    suffix = path.suffix.lower()
    if suffix in HTML_EXTENSIONS:
        title, text = html_to_text(text)
    elif suffix in (".md", ".markdown"):
        title = markdown_title(text)
    else:
        title = ""
    return title or path.stem, text


# --------------------------------------------------------------------------------------
# The collection
# --------------------------------------------------------------------------------------


def _visible(name: str) -> bool:
    return not name.startswith(".")


class FolderCollection(BatchingMixin):
    """Documents from the text, Markdown and HTML files under ``path`` (or one such file).

    Each passage becomes a :class:`Document` with ``meta = {"path", "passage"}``.
    Raises :class:`DataFormatError` when the path is missing or holds no readable file.
    """

    def __init__(self, path: str | Path, max_words: int = 200, overlap: int = 0,
                 extensions: tuple[str, ...] = FOLDER_EXTENSIONS):
        self.path = Path(path)
        self.max_words, self.overlap = max_words, overlap
        self.extensions = tuple(e.lower() for e in extensions)
        if not self.path.exists():
            raise DataFormatError("no such file or folder", self.path)
        if next(self._walk(), None) is None:
            raise DataFormatError(f"no readable files here; files ending in {', '.join(self.extensions)} "
                                  "are read (hidden files and folders are skipped)", self.path)

    def __repr__(self) -> str:
        return f"FolderCollection({str(self.path)!r})"

    def _matches(self, name: str) -> bool:
        return _visible(name) and name.lower().endswith(self.extensions)

    def _walk(self) -> Iterator[Path]:
        """Matching files in os.walk order (no sorting: used for the cheap emptiness test)."""
        if self.path.is_file():
            if self._matches(self.path.name):
                yield self.path
            return
        for root, dirs, files in os.walk(self.path):
            dirs[:] = [d for d in dirs if _visible(d)]
            for name in files:
                if self._matches(name):
                    yield Path(root) / name

    def files(self) -> list[Path]:
        """The files read, sorted by their path relative to the collection root."""
        return sorted(self._walk(), key=self._relative)

    def _relative(self, file: Path) -> str:
        return file.name if self.path.is_file() else file.relative_to(self.path).as_posix()

    def iter_documents(self) -> Iterator[Document]:
        """Stream passages file by file; only one file is held in memory at a time."""
        for file in self.files():
            title, text = read_text_file(file)
            relative = self._relative(file)
            for n, passage in enumerate(split_passages(text, self.max_words, self.overlap), start=1):
                meta = MappingProxyType({"path": relative, "passage": n})
                yield Document(f"{relative}#{n}", passage, title, meta)


__all__ = ["FOLDER_EXTENSIONS", "FolderCollection", "html_to_text", "markdown_title", "read_text_file"]
