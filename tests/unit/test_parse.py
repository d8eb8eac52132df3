from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config import ParseConfig
from schemas.records import ELEMENT, ContractError, error_table
from tasks.discover import discover_documents
from tasks.parse import man_to_markdown, parse_documents
from tests.conftest import MAN_PAGE


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from tests.conftest import write_corpus

    root = tmp_path_factory.mktemp("parse") / "corpus"
    write_corpus(root)
    found = discover_documents(root, ParseConfig())
    return parse_documents(found.documents, ParseConfig())


def _by_file(table) -> dict[str, list[dict]]:  # type: ignore[no-untyped-def]
    out: dict[str, list[dict]] = {}
    for row in table.to_pylist():
        out.setdefault(Path(row["source_uri"]).name, []).append(row)
    return out


def test_each_format_gives_text_with_titles_and_sections(parsed) -> None:  # type: ignore[no-untyped-def]
    assert parsed.elements.schema.equals(ELEMENT)
    files = _by_file(parsed.elements)
    assert set(files) == {"hockey.md", "bread.html", "volcano.txt", "notes.rst", "frobnicate.1.gz"}
    hockey = files["hockey.md"]
    assert hockey[0]["title"] == "Stanley Cup history"
    montreal = next(r for r in hockey if "Montreal" in r["text"])
    assert montreal["section"] == "Stanley Cup history > Winners"
    bread = files["bread.html"]
    proof = next(r for r in bread if "overnight" in r["text"])
    assert proof["section"].endswith("Proofing")
    assert [r["element_index"] for r in bread] == list(range(len(bread)))


def test_gzipped_man_page_is_parsed_with_sections(parsed) -> None:  # type: ignore[no-untyped-def]
    man = _by_file(parsed.elements)["frobnicate.1.gz"]
    text = " ".join(r["text"] for r in man)
    assert "recalibrates the quantum flux capacitor" in text
    assert "\\fB" not in text and ".TH" not in text
    assert any(r["section"] == "DESCRIPTION" for r in man)


def test_broken_and_empty_files_become_error_records(parsed) -> None:  # type: ignore[no-untyped-def]
    errors = {Path(e["source_uri"]).name: e for e in parsed.errors.to_pylist()}
    assert set(errors) == {"empty.txt", "broken.docx"}
    assert errors["empty.txt"]["error_type"] == "EmptyDocument"
    assert errors["broken.docx"]["stage"] == "parse"
    assert errors["broken.docx"]["message"]
    assert not errors["broken.docx"]["retryable"]


def test_man_to_markdown_keeps_text_and_headings() -> None:
    md = man_to_markdown(MAN_PAGE)
    assert "# NAME" in md and "## Options" in md
    assert "comment line" not in md
    assert "frobnicate" in md and "\\f" not in md


def test_wrong_input_schema_is_a_contract_error() -> None:
    with pytest.raises(ContractError):
        parse_documents(error_table([]), ParseConfig())


def test_pdf_fast_strategy_gives_text_offline(shared_data: Path) -> None:
    pdf = shared_data / "unstructured-example-docs" / "pdf" / "layout-parser-paper-fast.pdf"
    found = discover_documents(pdf, ParseConfig())
    out = parse_documents(found.documents, ParseConfig())
    assert out.errors.num_rows == 0
    assert out.elements.num_rows > 10
    assert set(out.elements.column("page_number").to_pylist()) >= {1, 2}


@pytest.mark.parametrize(("maker", "suffix", "error_type"), [
    ("truncated_docx", ".docx", "CorruptDocument"),
    ("corrupt_docx", ".docx", "CorruptDocument"),
    ("truncated_pptx", ".pptx", "CorruptDocument"),
    ("encrypted_docx", ".docx", "EncryptedDocument"),
    ("encrypted_pdf", ".pdf", "EncryptedDocument"),
    ("binary_txt", ".txt", "BinaryContent"),
    ("invalid_utf8", ".txt", "UndecodableText"),
    ("wrong_extension_pdf", ".pdf", "WrongFileType"),
    ("zero_byte", ".txt", "EmptyDocument"),
])
def test_bad_content_is_refused_with_its_reason(tmp_path: Path, maker: str, suffix: str, error_type: str) -> None:
    import random

    from tasks import parse
    from tests import adversarial

    path = getattr(adversarial, maker)(tmp_path / f"bad{suffix}", random.Random(5))
    doc = {"doc_id": "d", "source_uri": path.as_uri(), "path": str(path), "size": path.stat().st_size,
           "mtime_ns": 0, "content_sha256": "x"}
    with pytest.raises(parse.ParseFailure) as failure:
        parse.parse_document(doc, ParseConfig())
    assert failure.value.error_type == error_type, failure.value


def test_readable_text_in_an_odd_encoding_or_under_a_wrong_suffix_is_indexed(tmp_path: Path) -> None:
    from tasks import parse
    from tests.adversarial import pdf_bytes

    text = "The lighthouse keeper logs every ship that enters the harbour."
    (tmp_path / "utf16.txt").write_bytes(text.encode("utf-16-le"))
    (tmp_path / "really-a-pdf.docx").write_bytes(pdf_bytes(text))
    for name in ("utf16.txt", "really-a-pdf.docx"):
        path = tmp_path / name
        doc = {"doc_id": "d", "source_uri": path.as_uri(), "path": str(path), "size": path.stat().st_size,
               "mtime_ns": 0, "content_sha256": "x"}
        assert " ".join(r["text"] for r in parse.parse_document(doc, ParseConfig())) == text, name


def test_text_over_the_limit_is_refused_before_chunking(tmp_path: Path) -> None:
    from tasks import parse

    path = tmp_path / "long.txt"
    path.write_text("word " * 100)
    doc = {"doc_id": "d", "source_uri": path.as_uri(), "path": str(path), "size": path.stat().st_size,
           "mtime_ns": 0, "content_sha256": "x"}
    with pytest.raises(parse.ParseFailure) as failure:
        parse.parse_document(doc, ParseConfig(max_text_chars=100))
    assert failure.value.error_type == "TextTooLarge" and "parse.max_text_chars=100" in str(failure.value)
    assert parse.parse_document(doc, ParseConfig(max_text_chars=1000))


def test_a_man_page_alias_is_refused_with_its_target(tmp_path: Path) -> None:
    import gzip

    from tasks import parse

    path = tmp_path / "stpecpy.3.gz"
    path.write_bytes(gzip.compress(b".so man7/string_copying.7\n"))
    doc = {"doc_id": "d", "source_uri": path.as_uri(), "path": str(path), "size": path.stat().st_size,
           "mtime_ns": 0, "content_sha256": "x"}
    with pytest.raises(parse.ParseFailure) as failure:
        parse.parse_document(doc, ParseConfig())
    assert failure.value.error_type == "ManPageAlias"
    assert "man7/string_copying.7" in str(failure.value)
