"""Hostile and broken files, all made here, through the real product path: DocumentService.add
then ingest (the parsing sandbox, chunking, both indexes; the hashing embedder for speed).

One batch mixes over 200 hostile files with good ones. Required: each hostile file fails (or
is refused at upload) with a clear reason, each good file is indexed, the test process
survives, and nothing is written outside the data directory.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import secrets
import signal
import struct
import tempfile
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from assistant import sandbox
from assistant.answering.generation import ExtractiveFakeGenerator
from assistant.db import DocumentStatus
from assistant.embedding import HashingEmbedder
from assistant.errors import DocumentError, InvalidInput
from assistant.parsing import parse
from assistant.services import build_services
from assistant.settings import LimitSettings, load_settings
from tests import documents as make
from tests.conftest import ADMIN_PASSWORD

MiB = 1024 * 1024
# Smaller ZIP limits than the defaults keep the bombs quick to build (the defaults are
# checked on one real bomb below).
LIMITS = {"max_unpacked_bytes": 32 * MiB, "max_zip_entries": 1000, "max_pdf_pages": 50}
OFFICE = (".docx", ".xlsx", ".pptx", ".odt")
MAIN_PART = {
    ".docx": "word/document.xml",
    ".xlsx": "xl/workbook.xml",
    ".pptx": "ppt/presentation.xml",
    ".odt": "content.xml",
}
OTHER_PART = {
    ".docx": "word/styles.xml",
    ".xlsx": "xl/worksheets/sheet1.xml",
    ".pptx": "ppt/slides/slide1.xml",
    ".odt": "META-INF/manifest.xml",
}


@dataclass(frozen=True)
class Case:
    kind: str
    name: str
    data: bytes
    expect: str = "failed"  # "indexed" for good files; "refused" when add() must say no


# -- good files, each with unique text (the same bytes twice would be a duplicate) -------
_serial = itertools.count(1)


def fresh(words: str) -> str:
    return f"{words} (record {next(_serial)})."


def good(extension: str) -> bytes:
    builders: dict[str, Callable[[], bytes]] = {
        ".txt": lambda: fresh("The ferry timetable changes in October").encode(),
        ".md": lambda: f"# Notes\n\n{fresh('Café opening hours are posted')}".encode(),
        ".html": lambda: f"<html><body><p>{fresh('Parking rules')}</p></body></html>".encode(),
        ".csv": lambda: make.csv_bytes(f"Region,Manager\nNorth,{fresh('Aoife')}\n"),
        ".eml": lambda: make.eml_bytes(fresh("The boiler inspection is on Tuesday")),
        ".pdf": lambda: make.pdf_bytes([fresh("Mooring rules for small vessels"), "Page two."]),
        ".docx": lambda: make.docx_bytes([fresh("Staff canteen guide"), "Lunch at noon."]),
        ".xlsx": lambda: make.xlsx_bytes({"Sales": [["Region", "Sales"], [fresh("North"), 10]]}),
        ".pptx": lambda: make.pptx_bytes([(fresh("Quarterly results"), "Growth.", "Notes.")]),
        ".odt": lambda: make.odt_bytes([fresh("Library hours"), "Open at 8:00."]),
    }
    return builders[extension]()


# -- ZIP surgery ----------------------------------------------------------------------------
def rezip(
    data: bytes, replace: dict[str, bytes] | None = None, add: tuple[tuple[object, bytes], ...] = ()
) -> bytes:
    """The same archive with some entries replaced and some added."""
    replace = replace or {}
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            target.writestr(info, replace.get(info.filename, source.read(info)))
        for name, body in add:
            target.writestr(name, body)  # type: ignore[arg-type]
    return out.getvalue()


def plain_zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body in entries.items():
            archive.writestr(name, body)
    return out.getvalue()


def central_records(data: bytes) -> tuple[int, int, list[tuple[int, int]]]:
    """(central directory offset, entry count, [(record offset, record length)])."""
    end = data.rindex(b"PK\x05\x06")
    count, _size, offset = struct.unpack("<HII", data[end + 10 : end + 20])
    records, at = [], offset
    for _ in range(count):
        names = struct.unpack("<HHH", data[at + 28 : at + 34])
        records.append((at, 46 + sum(names)))
        at += 46 + sum(names)
    return offset, count, records


def overlapping(data: bytes) -> bytes:
    """Extra central-directory records that all point at the largest entry's data
    (a "non-recursive" ZIP bomb: far more compressed bytes claimed than the file holds)."""
    offset, count, records = central_records(data)
    at, length = max(records, key=lambda r: struct.unpack("<I", data[r[0] + 20 : r[0] + 24])[0])
    record = data[at : at + length]
    name_length, extra_length = struct.unpack("<HH", record[28:32])
    compressed = struct.unpack("<I", record[20:24])[0]
    copies = len(data) // max(compressed, 1) + 2
    extra = record[46 + name_length : 46 + name_length + extra_length]
    added = b"".join(
        record[:28] + struct.pack("<HHH", len(n), len(extra), 0) + record[34:46] + n + extra
        for n in (f"copy/{i}.bin".encode() for i in range(copies))
    )
    directory = data[offset : data.rindex(b"PK\x05\x06")] + added
    total = count + copies
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, total, total, len(directory), offset, 0)
    return data[:offset] + directory + end


def lying_size(data: bytes, name: str) -> bytes:
    """The entry `name` declares half its real unpacked size, in both headers."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(name)
    true = struct.pack("<III", info.CRC, info.compress_size, info.file_size)
    lie = struct.pack("<III", info.CRC, info.compress_size, info.file_size // 2)
    assert data.count(true) == 2
    return data.replace(true, lie)


def encrypted_flag(data: bytes) -> bytes:
    """Mark every entry as encrypted (general purpose flag bit 0), in both headers."""
    patched = bytearray(data)
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        for match in re.finditer(re.escape(signature), data):
            patched[match.start() + flag_at] |= 0x01
    return bytes(patched)


def with_entry(data: bytes, info: zipfile.ZipInfo, body: bytes) -> bytes:
    return rezip(data, add=((info, body),))


def zeros(size: int) -> bytes:
    return bytes(size)


# -- the corpus -----------------------------------------------------------------------------
def zip_bombs(token: str) -> list[Case]:
    cases = []
    for ext in OFFICE:
        symlink = zipfile.ZipInfo("media/link")
        symlink.external_attr = 0o120777 << 16
        variants = {
            "ratio": rezip(good(ext), add=(("media/bomb.bin", zeros(8 * MiB)),)),
            "unpacked": rezip(good(ext), add=(("media/bomb.bin", zeros(40 * MiB)),)),
            "medium": rezip(good(ext), add=tuple((f"m/{i}", zeros(MiB - 1)) for i in range(40))),
            "entries": rezip(good(ext), add=tuple((f"e/{i}.xml", b"<a/>") for i in range(1200))),
            "plain": plain_zip({"bomb.bin": zeros(40 * MiB), "id": fresh("id").encode()}),
            "nested": plain_zip(
                {"inner.zip": plain_zip({"bomb.bin": zeros(40 * MiB)}), "id": fresh("id").encode()}
            ),
            "overlap": overlapping(good(ext)),
            "lying": lying_size(good(ext), MAIN_PART[ext]),
            "symlink": with_entry(good(ext), symlink, b"../../../../etc/passwd"),
            "traversal": rezip(good(ext), add=((f"../../evil-{token}.txt", b"x"),)),
            "absolute": rezip(good(ext), add=((f"/tmp/evil-{token}.txt", b"x"),)),
            "encrypted": encrypted_flag(good(ext)),
        }
        cases += [
            Case(f"zip bomb or unsafe ZIP ({v})", f"bomb-{v}{ext}", d) for v, d in variants.items()
        ]
    return cases


XML_ATTACKS = {
    "billion laughs": (
        '<!DOCTYPE x [<!ENTITY lol "lol">'
        + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(2, 10))
        + '<!ENTITY lol1 "&lol;&lol;">]>',
        "&lol9;",
    ),
    "quadratic blowup": (f'<!DOCTYPE x [<!ENTITY a "{"x" * 50_000}">]>', "&a;" * 2000),
    "XXE file": ('<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>', "&xxe;"),
    "XXE parameter entity": (
        '<!DOCTYPE x [<!ENTITY % ext SYSTEM "file:///nonexistent/evil.dtd"> %ext;]>',
        "",
    ),
    "external DTD": ('<!DOCTYPE x SYSTEM "file:///etc/passwd">', ""),
    "internal DTD": ("<!DOCTYPE x [<!ELEMENT x ANY>]>", ""),
}


def with_doctype(xml: bytes, doctype: str, reference: str, utf16: bool = False) -> bytes:
    body = xml.split(b"?>", 1)[1] if xml.startswith(b"<?xml") else xml
    head, tail = body.rsplit(b"</", 1)
    encoding = "UTF-16" if utf16 else "UTF-8"
    document = f'<?xml version="1.0" encoding="{encoding}"?>\n{doctype}'
    document += head.decode() + reference + "</" + tail.decode()
    return document.encode("utf-16" if utf16 else "utf-8")


def xml_attacks() -> list[Case]:
    cases = []
    for ext in OFFICE:
        places = [MAIN_PART[ext], OTHER_PART[ext]]
        if ext != ".odt":
            places.append("[Content_Types].xml")
        for place, (attack, (doctype, reference)) in itertools.product(places, XML_ATTACKS.items()):
            data = good(ext)
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                original = archive.read(place)
            payload = with_doctype(original, doctype, reference)
            cases.append(
                Case(f"XML: {attack}", f"xml-{attack}{ext}", rezip(data, {place: payload}))
            )
        data = good(ext)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            original = archive.read(MAIN_PART[ext])
        doctype, reference = XML_ATTACKS["billion laughs"]
        payload = with_doctype(original, doctype, reference, utf16=True)
        cases.append(
            Case("XML: billion laughs", f"xml-utf16{ext}", rezip(data, {MAIN_PART[ext]: payload}))
        )
    return cases


_CATALOG = b"<< /Type /Catalog /Pages 2 0 R >>"
_PAGES = b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"
_PAGE = (
    b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
    b"/Resources << /Font << /F1 5 0 R >> >> >>"
)
_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def pdf_stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s >>\nstream\n" % (len(data), extra) + data + b"\nendstream"


def raw_pdf(
    *, catalog: bytes = _CATALOG, pages: bytes = _PAGES, page: bytes = _PAGE,
    content: bytes | None = None, trailer: bytes = b"", loop: bool = False,
) -> bytes:  # fmt: skip
    """A hand-written PDF; `trailer` may say {xref} for its own cross-reference offset;
    `loop` adds a second xref section, and each section's /Prev points at the other."""
    text = fresh("Hostile page text").encode()
    content = content or pdf_stream(b"BT /F1 12 Tf 72 720 Td (" + text + b") Tj ET")
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate([catalog, pages, page, content, _FONT], start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    first = len(out)
    out += b"xref\n0 6\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    if loop:
        second = len(out) + len(b"trailer\n<< /Size 6 /Root 1 0 R /Prev 0000000000 >>\n")
        out += b"trailer\n<< /Size 6 /Root 1 0 R /Prev %010d >>\n" % second
        out += b"xref\n0 0\ntrailer\n<< /Size 6 /Root 1 0 R /Prev %010d >>\n" % first
        first = second
    else:
        out += b"trailer\n<< /Size 6 /Root 1 0 R " + trailer.replace(b"{xref}", b"%d" % first)
        out += b" >>\n"
    return out + b"startxref\n%d\n%%%%EOF\n" % first


@cache
def deflated_zeros() -> bytes:
    import zlib

    return zlib.compress(zeros(200 * MiB), 9)


def encrypted_pdf(algorithm: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(good(".pdf"))))
    writer.encrypt(user_password="s3cret", owner_password="0wner", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def hostile_pdfs() -> list[Case]:
    variants = {
        "circular xref (self)": raw_pdf(trailer=b"/Prev {xref}"),
        "circular xref (two sections)": raw_pdf(loop=True),
        "huge stream": raw_pdf(content=pdf_stream(deflated_zeros(), b"/Filter /FlateDecode")),
        "lying stream length": raw_pdf(
            content=b"<< /Length 999999999 >>\nstream\nBT ET\nendstream"
        ),
        "self-referencing length": raw_pdf(
            content=b"<< /Length 4 0 R >>\nstream\nBT ET\nendstream"
        ),
        "page tree cycle": raw_pdf(pages=b"<< /Type /Pages /Kids [2 0 R] /Count 1 >>"),
        "page is its own parent": raw_pdf(page=b"<< /Type /Pages /Kids [2 0 R] /Parent 2 0 R >>"),
        "deep nesting": raw_pdf(
            page=_PAGE.replace(b"/Resources", b"/J " + b"[" * 99999 + b"]" * 99999 + b" /Resources")
        ),
        "self-referencing contents": raw_pdf(content=b"[4 0 R]"),
        "huge xref table": raw_pdf().replace(b"xref\n0 6", b"xref\n0 99999999"),
        "no text at all": raw_pdf(content=pdf_stream(b"0 0 m 100 100 l S")),
        "too many pages": make.pdf_bytes([fresh("Page one")] + ["Another page."] * 60),
    }
    cases = [Case("PDF: hostile structure", f"pdf-{v}.pdf", d) for v, d in variants.items()]
    for algorithm in ("RC4-40", "RC4-128", "AES-128", "AES-256"):
        cases.append(Case("encrypted PDF", f"encrypted-{algorithm}.pdf", encrypted_pdf(algorithm)))
    return cases


def truncated() -> list[Case]:
    cases = []
    for ext in (".pdf", *OFFICE):
        for fraction in (0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.97, -30):
            data = good(ext)
            cut = len(data) + fraction if fraction < 0 else int(len(data) * fraction)
            cases.append(Case("truncated", f"truncated-{fraction}{ext}", data[: int(cut)]))
    for ext in (".txt", ".md", ".html", ".csv"):
        for extra in ("", " and more"):
            data = fresh(f"Résumé of the café menu{extra}").encode() + "é".encode()
            cases.append(Case("truncated", f"truncated-utf8{ext}", data[:-1]))
    return cases


def wrong_types(token: str) -> list[Case]:
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + secrets.token_bytes(2048)
    others: dict[str, Callable[[], bytes]] = {
        "png": lambda: b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(512),
        "jpeg": lambda: b"\xff\xd8\xff\xe0" + secrets.token_bytes(512),
        "gif": lambda: b"GIF89a" + secrets.token_bytes(512),
        "elf": lambda: b"\x7fELF\x02\x01\x01" + secrets.token_bytes(512),
        "exe": lambda: b"MZ" + bytes(58) + b"\x40\x00\x00\x00PE\x00\x00" + secrets.token_bytes(256),
        "gzip": lambda: b"\x1f\x8b\x08\x00" + secrets.token_bytes(512),
        "7z": lambda: b"7z\xbc\xaf\x27\x1c" + secrets.token_bytes(512),
        "rar": lambda: b"Rar!\x1a\x07\x00" + secrets.token_bytes(512),
        "old office": lambda: ole + secrets.token_bytes(8),
    }
    swaps = {
        ".pdf": (".docx", ".xlsx", ".pptx", ".odt", ".txt", ".md", ".csv", ".html", ".eml"),
        ".docx": (".pdf", ".xlsx", ".pptx", ".odt", ".txt", ".csv", ".eml"),
        ".xlsx": (".docx", ".pptx", ".pdf"),
        ".pptx": (".docx", ".xlsx"),
        ".odt": (".docx", ".pdf"),
    }
    cases = [
        Case("wrong extension", f"really-{src[1:]}{dst}", good(src))
        for src, targets in swaps.items()
        for dst in targets
    ]
    for kind, targets in {
        "png": (".pdf", ".docx", ".txt"), "jpeg": (".pdf", ".txt"), "gif": (".html",),
        "elf": (".txt", ".pdf"), "exe": (".docx", ".md"), "gzip": (".csv", ".xlsx"),
        "7z": (".odt",), "rar": (".pptx",), "old office": (".docx", ".xlsx", ".pptx"),
    }.items():  # fmt: skip
        cases += [Case("wrong extension", f"really-{kind}{dst}", others[kind]()) for dst in targets]
    pdf, docx = good(".pdf"), good(".docx")
    polyglots = {
        "pdf+zip.pdf": good(".pdf") + plain_zip({"evil.txt": token.encode()}),
        "pdf+docx.pdf": good(".pdf") + good(".docx"),
        "pdf+docx.docx": pdf + docx,
        "gif+docx.docx": b"GIF89a" + secrets.token_bytes(64) + good(".docx"),
        "gif+pptx.pptx": b"GIF89a" + secrets.token_bytes(64) + good(".pptx"),
        "pdf+html.html": good(".pdf") + b"<html><body>hi</body></html>",
        "html+pdf.pdf": b"<html>" + good(".pdf"),
        "zip+pdf.pdf": plain_zip({"a.txt": token.encode()}) + good(".pdf"),
    }
    cases += [Case("polyglot", f"polyglot-{n}", d) for n, d in polyglots.items()]
    return cases


def broken_text() -> list[Case]:
    variants = {
        "huge-field.csv": ("a,b\n" + "x" * 200_000 + ",1\n").encode(),
        "latin1.csv": "Région,Ventes\nNord,10\n".encode("latin-1"),
        "nul.csv": b"a,b\n1,\x002\n",
        "no-headers.eml": fresh("just some words, no headers").encode(),
        "binary.eml": secrets.token_bytes(4096).replace(b":", b"."),
        "binary.html": b"<html>\x00\x01\x02</html>",
        "utf16.md": fresh("UTF-16 notes").encode("utf-16"),
        "utf32.txt": fresh("UTF-32 notes").encode("utf-32"),
        "whitespace.txt": b" \n\t\n" * 1000,
    }
    return [Case("broken text", f"broken-{n}", d) for n, d in variants.items()]


def zero_byte() -> list[Case]:
    extensions = (".txt", ".md", ".html", ".htm", ".csv", ".eml", ".pdf", *OFFICE)
    return [Case("zero bytes", f"empty{ext}", b"", "refused") for ext in extensions]


def hostile_names(token: str) -> list[Case]:
    names = [
        f"../../../../tmp/evil-{token}.txt",
        f"..\\..\\..\\windows\\system32\\evil-{token}.md",
        f"/etc/evil-{token}.html",
        f"C:\\Users\\Public\\evil-{token}.csv",
        f"~/evil-{token}.txt",
        "名前のレポート.txt",
        "emoji-😀-notes.md",
        "rtl-\u202egpj.exe.txt",
        "nul\x00byte.txt",
        "new\nline.txt",
        "cafe\u0301.md",
        ".hidden.txt",
        "CON.txt",
    ]
    cases = []
    for name in names:
        ext = Path(name.replace("\\", "/")).suffix
        cases.append(Case("hostile name (good content)", name, good(ext), "indexed"))
        broken = f"{name[: -len(ext)]}-broken{ext}"  # another name: not a new version
        cases.append(Case("hostile name", broken, b"%PDF-1.7 " + secrets.token_bytes(64)))
    return cases


def corpus(token: str) -> list[Case]:
    goods = [Case("good", f"good{ext}", good(ext), "indexed") for ext in (
        ".txt", ".md", ".html", ".csv", ".eml", ".pdf", *OFFICE)]  # fmt: skip
    return [
        *goods,
        *zip_bombs(token),
        *xml_attacks(),
        *hostile_pdfs(),
        *truncated(),
        *wrong_types(token),
        *broken_text(),
        *zero_byte(),
        *hostile_names(token),
    ]


# -- checks ---------------------------------------------------------------------------------
def clear(reason: str | None) -> bool:
    """A reason an admin can read: one line, short, no traceback or OS error codes."""
    if not reason or not reason.strip():
        return False
    noise = ("Traceback", "Errno", 'File "', "\n", "<module>", "object at 0x")
    return len(reason) <= 600 and not any(n in reason for n in noise)


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if not p.is_dir()}


@pytest.fixture
def isolated_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh working directory and system temp dir, so stray writes would show; the
    sandbox helper restarts inside them."""
    for name in ("cwd", "tmp"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)
    sandbox.shutdown()
    yield tmp_path
    sandbox.shutdown()


def test_hostile_batch_fails_each_with_a_reason_and_indexes_the_good(
    isolated_place: Path,
) -> None:
    tmp_path = isolated_place
    token = secrets.token_hex(6)
    started = time.monotonic()
    cases = corpus(token)
    built = time.monotonic() - started
    hostile = [c for c in cases if c.expect != "indexed"]
    assert len(hostile) >= 200
    assert len({c.data for c in cases if c.data}) == len([c for c in cases if c.data])

    settings = load_settings(
        data_dir=tmp_path / "var", admin_password=ADMIN_PASSWORD, limits=LIMITS
    )
    services = build_services(
        settings, embedder=HashingEmbedder(), generator=ExtractiveFakeGenerator()
    )
    documents = services.documents
    outside_before = files_under(tmp_path) - files_under(tmp_path / "var")

    added: dict[str, Case] = {}
    outcome: dict[Case, tuple[str, str | None]] = {}
    for case in cases:
        try:
            added[documents.add(case.name, case.data).id] = case
        except InvalidInput as exc:
            outcome[case] = ("refused", str(exc))
    for document_id, case in added.items():
        document = documents.ingest(document_id)
        outcome[case] = (document.status, document.error)
    elapsed = time.monotonic() - started

    problems = []
    for case, (status, reason) in outcome.items():
        if case.expect == "indexed" and status != DocumentStatus.INDEXED:
            problems.append(f"good file {case.name!r} ended {status}: {reason}")
        elif case.expect == "failed" and (status != DocumentStatus.FAILED or not clear(reason)):
            problems.append(f"{case.kind}: {case.name!r} ended {status}: {reason!r}")
        elif case.expect == "refused" and (status != "refused" or not clear(reason)):
            problems.append(f"{case.kind}: {case.name!r} was not refused: {status} {reason!r}")
    assert not problems, "\n".join(problems)

    # Nothing written outside the data directory; originals stored under internal ids only.
    assert files_under(tmp_path) - files_under(tmp_path / "var") == outside_before
    assert all(re.fullmatch(r"[0-9a-f]{32}", p.name) for p in files_under(settings.originals_dir))
    assert not list(settings.scratch_dir.glob("parse-*"))
    for place in (Path("/tmp"), Path("/etc"), tmp_path.parent, Path.home()):
        assert not list(place.glob(f"*{token}*")), place
    for document in documents.list():
        assert "/" not in document.filename and "\\" not in document.filename

    kinds = Counter(c.kind for c in hostile)
    print(f"\n{len(hostile)} hostile files, {len(cases) - len(hostile)} good, "
          f"built in {built:.1f} s, whole batch {elapsed:.1f} s")  # fmt: skip
    for kind, count in sorted(kinds.items()):
        print(f"  {count:4d}  {kind}")
    reasons = Counter((outcome[c][1] or "").split(" (")[0][:70] for c in hostile)
    for reason, count in reasons.most_common():
        print(f"  {count:4d}  {reason}")


# -- the sandbox itself ---------------------------------------------------------------------
def test_wall_clock_limit() -> None:
    limits = LimitSettings(parse_seconds=0.001)
    with pytest.raises(DocumentError, match=r"parsing took longer than 0\.001 s"):
        sandbox.parse_isolated(make.pdf_bytes(), ".pdf", limits)
    assert "Kestrel" in sandbox.parse_isolated(make.pdf_bytes(), ".pdf").text  # still works


def test_memory_limit() -> None:
    limits = LimitSettings(parse_memory_bytes=64 * MiB)
    with pytest.raises(DocumentError, match=r"more than 64 MiB of memory"):
        sandbox.parse_isolated(make.pdf_bytes(), ".pdf", limits)


def test_cpu_limit() -> None:
    html = ("<div>" + "<p>word</p>" * 400_000 + "</div>").encode()
    limits = LimitSettings(parse_cpu_seconds=1)
    with pytest.raises(DocumentError, match=r"parsing used more than 1 s of CPU time"):
        sandbox.parse_isolated(html, ".html", limits)


def test_a_killed_helper_is_replaced() -> None:
    sandbox.parse_isolated(b"warm up", ".txt")
    helper = sandbox._helper
    assert helper is not None
    children = Path(f"/proc/{helper.pid}/task/{helper.pid}/children")

    def kill_while_parsing() -> None:  # once the helper has forked the file's child
        deadline = time.monotonic() + 30
        while not children.read_text().split() and time.monotonic() < deadline:
            time.sleep(0.002)
        os.kill(helper.pid, signal.SIGKILL)

    threading.Thread(target=kill_while_parsing).start()
    with pytest.raises(DocumentError, match="stopped unexpectedly"):  # 40 pages: about 2 s
        sandbox.parse_isolated(make.scanned_pdf_bytes(["slow page"] * 40), ".pdf")
    assert sandbox.parse_isolated(b"after the crash", ".txt").text == "after the crash"


def test_default_limits_refuse_a_real_zip_bomb() -> None:
    bomb = rezip(good(".docx"), add=(("word/media/bomb.bin", zeros(300 * MiB)),))
    assert len(bomb) < 2 * MiB
    with pytest.raises(DocumentError, match=r"would unpack to 30\d MiB; the limit is 256 MiB"):
        parse(bomb, ".docx")


def test_a_sheet_claiming_every_cell_is_read_quickly() -> None:
    """A worksheet whose dimension claims A1:XFD1048576 must not make 17 billion cells."""
    data = good(".xlsx")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        sheet = archive.read("xl/worksheets/sheet1.xml")
    sheet = re.sub(rb'<dimension ref="[^"]*"/>', b'<dimension ref="A1:XFD1048576"/>', sheet)
    started = time.monotonic()
    parsed = parse(rezip(data, {"xl/worksheets/sheet1.xml": sheet}), ".xlsx")
    assert time.monotonic() - started < 5
    assert "Region: " in parsed.text


def test_a_deeply_nested_email_is_read() -> None:
    nested = "Content-Type: multipart/mixed; boundary=b\n\n--b\n" * 1000
    data = ("From: a@example.org\nSubject: deep\n" + nested).encode()
    assert "Subject: deep" in sandbox.parse_isolated(data, ".eml").text
