"""Checks made before any parser sees a file: the content matches the extension, a ZIP
container stays within the limits (read from its central directory, before decompressing),
and the XML parts inside hold no DTD or entity declarations (billion laughs, XXE)."""

from __future__ import annotations

import io
import posixpath
import stat
import zipfile
from xml.etree.ElementTree import ParseError

from assistant.errors import DocumentError, ParseLimitExceeded, UnsafeDocument
from assistant.settings import LimitSettings

ZIP_FORMATS = (".docx", ".xlsx", ".pptx", ".odt")
TEXT_FORMATS = (".txt", ".md", ".csv", ".html", ".htm", ".eml")
# The part that tells each ZIP-based format apart (ODT is told by its "mimetype" entry).
_MAIN_PARTS = {
    "word/document.xml": ".docx",
    "xl/workbook.xml": ".xlsx",
    "ppt/presentation.xml": ".pptx",
}
_ODF_TYPES = {
    "application/vnd.oasis.opendocument.text": ".odt",
    "application/vnd.oasis.opendocument.spreadsheet": ".ods",
    "application/vnd.oasis.opendocument.presentation": ".odp",
}
_DESCRIPTIONS = {
    ".docx": "a Word document (.docx)",
    ".xlsx": "an Excel workbook (.xlsx)",
    ".pptx": "a PowerPoint presentation (.pptx)",
    ".odt": "an OpenDocument text (.odt)",
    ".ods": "an OpenDocument spreadsheet (.ods)",
    ".odp": "an OpenDocument presentation (.odp)",
    "": "a ZIP archive",
}
_SIGNATURES = (
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive or an Office document"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a password-protected or old-format Office file"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\x7fELF", "a Linux program"),
    (b"\x1f\x8b\x08", "a gzip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
)
RATIO_FLOOR = 1024 * 1024  # entries smaller than this may compress as well as they like


def sniff(data: bytes) -> str | None:
    """What a binary file is, from its first bytes; None for anything else (text, say)."""
    for signature, description in _SIGNATURES:
        if data.startswith(signature):
            return description
    if data.startswith(b"MZ") and b"PE\x00\x00" in data[:1024]:
        return "a Windows program"
    return None


def check_content(data: bytes, extension: str, limits: LimitSettings) -> None:
    """Refuse, with a reason, a file whose bytes do not match its extension or that is
    unsafe to hand to a parser."""
    label = extension.lstrip(".").upper()
    found = sniff(data)
    if extension == ".pdf":
        if not data.startswith(b"%PDF-"):
            what = found or "not a PDF (it does not start with %PDF-)"
            raise DocumentError(f"the file is {what}; the .pdf extension is wrong")
        if _is_zip(data):
            raise UnsafeDocument("the file is both a PDF and a ZIP archive (a polyglot)")
    elif extension in ZIP_FORMATS:
        if found and not data.startswith(b"PK\x03\x04"):
            if "Office" in found:
                raise DocumentError(
                    f"the file is {found}; save it as {extension} without a password"
                )
            raise DocumentError(f"the file is {found}, not {_DESCRIPTIONS[extension]}")
        if not data.startswith(b"PK"):
            raise DocumentError(f"the {label} file is damaged or not a real {label} file")
        with open_zip(data, limits, label) as archive:
            kind = zip_kind(archive)
            if kind != extension:
                raise DocumentError(
                    f"the file is {_DESCRIPTIONS.get(kind, kind)}, not {_DESCRIPTIONS[extension]}"
                )
            check_xml_parts(archive)
    elif extension in TEXT_FORMATS and found:
        raise DocumentError(f"the file is {found}, not a {extension} text file")


def _is_zip(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return bool(archive.infolist())
    except Exception:
        return False


def open_zip(data: bytes, limits: LimitSettings, label: str = "ZIP") -> zipfile.ZipFile:
    """Open a ZIP archive after checking its central directory against the limits.
    Also usable for uploaded .zip batches (entry names are never used as paths here)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except Exception as exc:
        reason = f"not a readable ZIP archive: {exc}"
        damaged = f"the {label} file is damaged or not a real {label} file"
        raise DocumentError(f"{damaged} ({reason})") from None
    try:
        check_zip_entries(entries, len(data), limits, label)
    except DocumentError:
        archive.close()
        raise
    return archive


def check_zip_entries(
    entries: list[zipfile.ZipInfo], size: int, limits: LimitSettings, label: str
) -> None:
    if len(entries) > limits.max_zip_entries:
        raise ParseLimitExceeded(
            f"the {label} file holds {len(entries)} entries; the limit is {limits.max_zip_entries}"
        )
    unpacked = sum(info.file_size for info in entries)
    if unpacked > limits.max_unpacked_bytes:
        raise ParseLimitExceeded(
            f"the {label} file would unpack to {byte_size(unpacked)}; "
            f"the limit is {byte_size(limits.max_unpacked_bytes)}"
        )
    if sum(info.compress_size for info in entries) > size:
        raise UnsafeDocument(f"the {label} file's entries overlap (a ZIP bomb)")
    for info in entries:
        name = info.filename
        if info.flag_bits & 0x1:
            raise DocumentError(f"the {label} file is password-protected")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeDocument(f"the {label} file holds a symbolic link ({name[:80]})")
        parts = posixpath.normpath(name.replace("\\", "/")).split("/")
        if name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
            raise UnsafeDocument(f"the {label} file holds an unsafe path ({name[:80]})")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= RATIO_FLOOR and ratio > limits.max_compression_ratio:
            raise UnsafeDocument(
                f"the {label} file holds an entry compressed {ratio:.0f}:1 ({name[:80]}), "
                f"a likely ZIP bomb; the limit is {limits.max_compression_ratio:.0f}:1"
            )


def zip_kind(archive: zipfile.ZipFile) -> str:
    """The extension a ZIP container's contents call for; "" for a plain ZIP archive."""
    names = set(archive.namelist())
    for part, extension in _MAIN_PARTS.items():
        if part in names:
            return extension
    if "mimetype" in names:
        with archive.open("mimetype") as stream:
            mimetype = stream.read(100).decode("ascii", "replace").strip()
        return _ODF_TYPES.get(mimetype, "")
    return ""


def check_xml_parts(archive: zipfile.ZipFile) -> None:
    """Refuse any XML part with a DTD, entity declarations or external references, which
    the OOXML and ODF formats never need. Parts are named by extension or declared XML in
    [Content_Types].xml; only each part's prolog is read (a DTD must come before the root)."""
    names = archive.namelist()
    xml_extensions = {"xml", "rels", "vml"}
    overrides: set[str] = set()
    if "[Content_Types].xml" in names:
        _check_prolog(archive, "[Content_Types].xml")
        extensions, overrides = _declared_xml(archive)
        xml_extensions |= extensions
    for name in names:
        extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        if extension in xml_extensions or name in overrides or name == "mimetype":
            _check_prolog(archive, name)


def _check_prolog(archive: zipfile.ZipFile, name: str) -> None:
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import iterparse

    if name == "mimetype":
        return
    with archive.open(name) as stream:
        try:
            for _event in iterparse(stream, events=("start",), forbid_dtd=True):
                break  # the root element has started: no DTD can follow
        except DefusedXmlException as exc:
            raise UnsafeDocument(
                f"the XML part {name[:80]} declares a DTD or entities ({type(exc).__name__}); "
                "documents never need them and they are used to attack parsers"
            ) from None
        except ParseError:
            return  # not XML at all: the format's reader reports it if it matters


def _declared_xml(archive: zipfile.ZipFile) -> tuple[set[str], set[str]]:
    """Extensions and part names that [Content_Types].xml says hold XML."""
    from defusedxml.ElementTree import fromstring

    with archive.open("[Content_Types].xml") as stream:
        try:
            root = fromstring(stream.read(), forbid_dtd=True)
        except ParseError:
            return set(), set()
    extensions: set[str] = set()
    overrides: set[str] = set()
    for element in root:
        content_type = element.get("ContentType", "")
        if not content_type.endswith("xml"):
            continue
        if element.tag.endswith("Default"):
            extensions.add(element.get("Extension", "").lower())
        elif element.tag.endswith("Override"):
            overrides.add(element.get("PartName", "").lstrip("/"))
    return extensions, overrides


def byte_size(size: float) -> str:
    if size < 1024:
        return f"{size:.0f} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.3g} {unit}"
