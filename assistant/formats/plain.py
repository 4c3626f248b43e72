"""Text-based formats: plain text and Markdown, HTML, CSV and e-mail (.eml)."""

from __future__ import annotations

import csv
import io
import re

from assistant.errors import DocumentError
from assistant.formats.document import ParsedDocument, normalise, table_text


def decode_text(data: bytes, what: str = "file") -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"the {what} is not valid UTF-8 text (byte 0x{data[exc.start]:02x} at position "
            f"{exc.start}); save it as UTF-8 and upload it again"
        ) from None
    if "\x00" in text:
        raise DocumentError("the file holds binary data, not text")
    return text


def parse_text(data: bytes) -> ParsedDocument:
    return ParsedDocument(normalise(decode_text(data)))


def parse_html(data: bytes) -> ParsedDocument:
    return ParsedDocument(html_to_text(decode_text(data)))


def html_to_text(html: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    title = soup.title.get_text(strip=True) if soup.title else ""
    body = soup.get_text("\n")
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in body.splitlines()]
    text = normalise("\n".join(lines))
    return f"{title}\n\n{text}" if title and not text.startswith(title) else text


def parse_csv(data: bytes) -> ParsedDocument:
    """Each row as "Header: value; ..." under the first row's headers."""
    text = decode_text(data, "CSV file")
    sample = text[:65536]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, ",;\t|")
    except csv.Error:
        dialect = csv.excel  # a single column, or too little to tell
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), dialect))
    except csv.Error as exc:
        raise DocumentError(f"the CSV file is damaged ({exc})") from None
    body = table_text(rows)
    return ParsedDocument(body, report={"tables": 1 if body else 0})


def parse_eml(data: bytes) -> ParsedDocument:
    """Subject, From, To, Cc and Date lines, then the plain-text body (or the HTML body's
    text). Attachments are not indexed; the report lists them."""
    from email import policy
    from email.message import EmailMessage
    from email.parser import BytesParser

    message = BytesParser(policy=policy.default).parsebytes(data)
    if not isinstance(message, EmailMessage) or not any(
        message.get(h) for h in ("From", "To", "Subject", "Date", "Message-ID")
    ):
        raise DocumentError("the file is not an e-mail message (no From, To or Subject header)")
    lines = [
        f"{header}: {' '.join(str(message[header]).split())}"
        for header in ("Subject", "From", "To", "Cc", "Date")
        if message.get(header)
    ]
    body = ""
    part = message.get_body(preferencelist=("plain", "html"))
    if part is not None:
        try:
            content = part.get_content()
        except (LookupError, ValueError):  # an unknown or lying charset
            content = part.get_payload(decode=True) or b""
            content = content.decode("utf-8", "replace") if isinstance(content, bytes) else ""
        if isinstance(content, str):
            body = html_to_text(content) if part.get_content_type() == "text/html" else content
    warnings = []
    names = [a.get_filename() or a.get_content_type() for a in message.iter_attachments()]
    if names:
        warnings.append(f"attachments not indexed: {', '.join(names)}")
    text = normalise("\n".join(lines) + "\n\n" + body)
    return ParsedDocument(text, report={"warnings": warnings})
