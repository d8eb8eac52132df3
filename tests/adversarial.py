"""An adversarial corpus: good documents with every kind of bad file mixed in.

``python -m tests.adversarial OUT [--good 1000] [--copies 12]`` writes ``OUT`` with ``--good`` good
documents (Markdown, HTML, text, DOCX) and ``--copies`` variants of each bad kind below, and
``OUT.manifest.json`` saying which file is which; after ``headwater ingest OUT --collection C``,
``python -m tests.adversarial check OUT --collection C`` compares the index with the manifest.
The tests use the same makers on a small scale.

Bad kinds: truncated and corrupt PDF/DOCX/PPTX, zero-byte files, binary under ``.txt``, invalid
UTF-8, UTF-16 without a BOM, one huge single line, deeply nested HTML, a DOCX zip bomb, encrypted
PDF and DOCX, a symlink loop, a symlink leaving the root, unreadable permissions, wrong extensions.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

WORDS = (
    "river", "delta", "glacier", "volcano", "basalt", "magma", "harbour", "lighthouse", "orchard",
    "sourdough", "starter", "proofing", "hockey", "trophy", "league", "widget", "flux", "lattice",
    "resonance", "compiler", "kernel", "socket", "packet", "router", "archive", "ledger", "index", "query",
    "vector", "chunk", "parser", "backfill", "schedule", "replica", "shard", "quorum",
)

_DOCX_TYPES = ('<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/'
               '2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-'
               'package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override '
               'PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.'
               'wordprocessingml.document.main+xml"/></Types>')
_DOCX_RELS = ('<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/'
              'package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
              'officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>')
_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def sentence(rng: random.Random, n: int = 12) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def docx_bytes(paragraphs: list[str]) -> bytes:
    body = "".join(f"<w:p><w:r><w:t>{p}</w:t></w:r></w:p>" for p in paragraphs)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", _DOCX_TYPES)
        z.writestr("_rels/.rels", _DOCX_RELS)
        z.writestr("word/document.xml", f'<?xml version="1.0"?><w:document xmlns:w="{_W}"><w:body>{body}'
                   "</w:body></w:document>")
    return buf.getvalue()


def pdf_bytes(text: str) -> bytes:
    """A minimal valid one-page PDF showing ``text`` (offsets computed, so parsers accept it)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def pptx_bytes() -> bytes:
    from pptx import Presentation

    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Quarterly harbour report"
    slide.placeholders[1].text = "Lighthouse maintenance finished ahead of schedule."
    buf = io.BytesIO()
    deck.save(buf)
    return buf.getvalue()


# --- good documents ---------------------------------------------------------------------------


def write_good(root: Path, count: int, seed: int = 7) -> list[Path]:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        title = f"Note {i} on {rng.choice(WORDS)} and {rng.choice(WORDS)}"
        paras = [sentence(rng, rng.randint(8, 30)) for _ in range(rng.randint(2, 6))]
        kind = i % 4
        if kind == 0:
            path = root / f"good-{i:05d}.md"
            path.write_text(f"# {title}\n\n" + "\n\n".join(paras) + "\n")
        elif kind == 1:
            path = root / f"good-{i:05d}.html"
            path.write_text(f"<html><head><title>{title}</title></head><body><h1>{title}</h1>"
                            + "".join(f"<p>{p}</p>" for p in paras) + "</body></html>")
        elif kind == 2:
            path = root / f"good-{i:05d}.txt"
            path.write_text(title + "\n\n" + "\n\n".join(paras) + "\n")
        else:
            path = root / f"good-{i:05d}.docx"
            path.write_bytes(docx_bytes([title, *paras]))
        paths.append(path)
    return paths


# --- bad documents: each maker writes one file (or link) and returns its path ------------------


def truncated_pdf(path: Path, rng: random.Random) -> Path:
    data = pdf_bytes(sentence(rng))
    path.write_bytes(data[: rng.randint(20, len(data) // 2)])
    return path


def corrupt_pdf(path: Path, rng: random.Random) -> Path:
    path.write_bytes(b"%PDF-1.7\n" + rng.randbytes(4096))
    return path


def truncated_docx(path: Path, rng: random.Random) -> Path:
    data = docx_bytes([sentence(rng)])
    path.write_bytes(data[: rng.randint(30, len(data) // 2)])
    return path


def corrupt_docx(path: Path, rng: random.Random) -> Path:
    path.write_bytes(b"PK\x03\x04" + rng.randbytes(2048))
    return path


def truncated_pptx(path: Path, rng: random.Random) -> Path:
    data = pptx_bytes()
    path.write_bytes(data[: rng.randint(100, len(data) // 2)])
    return path


def zero_byte(path: Path, rng: random.Random) -> Path:
    path.write_bytes(b"")
    return path


def binary_txt(path: Path, rng: random.Random) -> Path:
    path.write_bytes(rng.randbytes(8192))
    return path


def invalid_utf8(path: Path, rng: random.Random) -> Path:
    path.write_bytes(b"\xff\xfe\xfa" * 400 + b"\xc3\x28\xa0\xa1" * 400)
    return path


def utf16_no_bom(path: Path, rng: random.Random) -> Path:
    path.write_bytes((sentence(rng, 40) + "\n").encode("utf-16-le"))
    return path


def single_line(path: Path, rng: random.Random, megabytes: int = 100) -> Path:
    """One line of ``megabytes`` MB (no newline at all): slow enough to need the parse time limit."""
    chunk = (" ".join(rng.choice(WORDS) for _ in range(20_000)) + " ").encode()
    with open(path, "wb") as fh:
        left = megabytes * 1_000_000
        while left > 0:
            fh.write(chunk[:left])
            left -= len(chunk)
    return path


def nested_html(path: Path, rng: random.Random, depth: int = 100_000) -> Path:
    path.write_text("<html><body>" + "<div>" * depth + sentence(rng) + "</div>" * depth + "</body></html>")
    return path


def docx_bomb(path: Path, rng: random.Random, megabytes: int = 1024) -> Path:
    """A ~1 MB DOCX whose document part inflates to ``megabytes`` MB of tiny paragraphs."""
    para = b"<w:p><w:r><w:t>a</w:t></w:r></w:p>" * 30_000
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", _DOCX_TYPES)
        z.writestr("_rels/.rels", _DOCX_RELS)
        with z.open("word/document.xml", "w", force_zip64=True) as fh:
            fh.write(f'<?xml version="1.0"?><w:document xmlns:w="{_W}"><w:body>'.encode())
            for _ in range(megabytes * 1_000_000 // len(para)):
                fh.write(para)
            fh.write(b"</w:body></w:document>")
    return path


def encrypted_pdf(path: Path, rng: random.Random) -> Path:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes(sentence(rng)))))
    writer.encrypt(user_password="secret-" + str(rng.randint(0, 10**6)), algorithm="AES-128")
    with open(path, "wb") as fh:
        writer.write(fh)
    return path


def encrypted_docx(path: Path, rng: random.Random) -> Path:
    """What Office writes for a password-protected DOCX: an OLE compound file, not a zip."""
    path.write_bytes(bytes.fromhex("d0cf11e0a1b11ae1") + b"\x00" * 16 + b"EncryptionInfo" + rng.randbytes(4096))
    return path


def symlink_loop(path: Path, rng: random.Random) -> Path:
    other = path.with_name(path.name + "-other.txt")
    path.symlink_to(other.name)
    other.symlink_to(path.name)
    return path


def symlink_outside(path: Path, rng: random.Random) -> Path:
    path.symlink_to("/etc/hostname")
    return path


def unreadable(path: Path, rng: random.Random) -> Path:
    path.write_text(sentence(rng))
    path.chmod(0)
    return path


def wrong_extension_pdf(path: Path, rng: random.Random) -> Path:
    """A PNG image saved as .pdf."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + rng.randbytes(2048))
    return path


def wrong_extension_docx(path: Path, rng: random.Random) -> Path:
    """A PDF saved as .docx."""
    path.write_bytes(pdf_bytes(sentence(rng)))
    return path


Maker = Callable[[Path, random.Random], Path]

# kind -> (file name suffix, maker); the huge ones are made once per corpus, the rest per copy.
BAD: dict[str, tuple[str, Maker]] = {
    "truncated_pdf": (".pdf", truncated_pdf),
    "corrupt_pdf": (".pdf", corrupt_pdf),
    "truncated_docx": (".docx", truncated_docx),
    "corrupt_docx": (".docx", corrupt_docx),
    "truncated_pptx": (".pptx", truncated_pptx),
    "zero_byte": (".txt", zero_byte),
    "binary_txt": (".txt", binary_txt),
    "invalid_utf8": (".txt", invalid_utf8),
    "utf16_no_bom": (".txt", utf16_no_bom),
    "nested_html": (".html", nested_html),
    "encrypted_pdf": (".pdf", encrypted_pdf),
    "encrypted_docx": (".docx", encrypted_docx),
    "symlink_loop": (".txt", symlink_loop),
    "symlink_outside": (".txt", symlink_outside),
    "unreadable": (".txt", unreadable),
    "wrong_extension_pdf": (".pdf", wrong_extension_pdf),
    "wrong_extension_docx": (".docx", wrong_extension_docx),
}
HUGE: dict[str, tuple[str, Maker]] = {
    "single_line_100mb": (".txt", single_line),
    "docx_bomb": (".docx", docx_bomb),
}


def write_bad(root: Path, copies: int, seed: int = 11, huge: bool = True) -> dict[str, str]:
    """Bad files under ``root/bad``; returns file name -> kind (a symlink loop's partner included)."""
    rng = random.Random(seed)
    bad = root / "bad"
    bad.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    for kind, (suffix, maker) in BAD.items():
        for i in range(copies):
            path = maker(bad / f"{kind}-{i:03d}{suffix}", rng)
            made[str(path.relative_to(root))] = kind
            if kind == "symlink_loop":
                partner = path.with_name(path.name + "-other.txt")
                made[str(partner.relative_to(root))] = kind
    for kind, (suffix, maker) in (HUGE.items() if huge else ()):
        path = maker(bad / f"{kind}{suffix}", rng)
        made[str(path.relative_to(root))] = kind
    return made


def check(out: Path, collection: str) -> int:
    """Compare an ingest of ``out`` with its manifest: every good file in the ledger, every bad one in
    the dead-letter store (or, for readable content, indexed). Prints a table; returns 1 on a miss."""
    from collections import Counter

    from infra.weaviate.connection import weaviate_client, weaviate_endpoint
    from schemas.collection import resolve_target
    from schemas.config import load_config
    from tasks.deadletter import read_dead_letters
    from tasks.ledger import read_ledger

    manifest = json.loads(Path(f"{out}.manifest.json").read_text())
    config = load_config(overrides={"index": {"collection": collection}})
    with weaviate_endpoint(config.weaviate) as endpoint, weaviate_client(endpoint) as client:
        target = resolve_target(client, collection)
        if target is None:
            print(f"no index {collection!r}")
            return 1
        ledger, dead = read_ledger(client, target), read_dead_letters(client, target)

    def uri(rel: str) -> str:
        return Path(os.path.abspath(out / rel)).as_uri()

    good_missing = [g for g in manifest["good"] if uri(g) not in ledger]
    outcomes: dict[str, Counter[str]] = {}
    for rel, kind in manifest["bad"].items():
        letter = dead.get(uri(rel))
        outcome = f"{letter.stage}: {letter.error_type}" if letter else "indexed" if uri(rel) in ledger else "MISSING"
        outcomes.setdefault(kind, Counter())[outcome] += 1
    print(f"good: {len(manifest['good']) - len(good_missing)} of {len(manifest['good'])} indexed")
    print(f"bad: {len(manifest['bad'])} files, {sum(1 for r in manifest['bad'] if uri(r) in dead)} in the "
          f"dead-letter store\n\n| kind | files | outcome |\n|---|---:|---|")
    for kind, counts in outcomes.items():
        print(f"| {kind} | {sum(counts.values())} | {', '.join(f'{o} ({n})' for o, n in counts.most_common())} |")
    missing = good_missing + [k for k, c in outcomes.items() if "MISSING" in c]
    if missing:
        print(f"\nMISSING: {missing[:20]}")
    return 1 if missing else 0


def main() -> None:
    if sys.argv[1:2] == ["check"]:
        checker = argparse.ArgumentParser(description="compare an ingest with the corpus manifest")
        checker.add_argument("out", type=Path)
        checker.add_argument("--collection", required=True)
        args = checker.parse_args(sys.argv[2:])
        raise SystemExit(check(args.out, args.collection))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--good", type=int, default=1000)
    parser.add_argument("--copies", type=int, default=12, help="files per bad kind (17 kinds)")
    args = parser.parse_args()
    good = write_good(args.out / "good", args.good)
    bad = write_bad(args.out, args.copies)
    manifest = {"good": [str(p.relative_to(args.out)) for p in good], "bad": bad}
    Path(f"{args.out}.manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"{args.out}: {len(good)} good, {len(bad)} bad files ({len(set(bad.values()))} kinds); "
          f"manifest {args.out}.manifest.json")


if __name__ == "__main__":
    os.umask(0o022)
    main()
