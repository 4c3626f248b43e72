"""Small documents written by the tests themselves, one per supported format."""

from __future__ import annotations

import io

PDF_PAGES = [
    "Harbour operations manual. This page describes the mooring rules for small vessels "
    "and the radio channels used by the harbour office during the night shift.",
    "The Kestrel Point lighthouse was automated in 1987 by the coastal authority. "
    "Its lamp is inspected every March by two licensed technicians.",
]
DOCX_PARAGRAPHS = [
    "Staff canteen guide",
    "The staff canteen opens at 7:30 and serves breakfast until 10:00.",
    "Vegetarian meals are labelled with a green leaf on the daily menu board.",
]
HTML = """<!doctype html><html><head><title>Visitor parking</title>
<style>body { color: red }</style><script>var tracking = 1;</script></head>
<body><h1>Visitor parking</h1>
<p>Visitor parking permits are issued at the north gate reception desk.</p>
<p>Permits are valid for one day and must be shown on the dashboard.</p></body></html>"""
MARKDOWN = """# Compliance review

The quarterly compliance review is chaired by Dr. Amara Okafor.

Minutes of the review are archived in the records office for seven years.
"""


def pdf_bytes(pages: list[str] = PDF_PAGES) -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    for text in pages:
        line = pdf.beginText(50, 780)
        words, current = text.split(), ""
        for word in words:  # wrap at about 80 characters
            if len(current) + len(word) > 80:
                line.textLine(current)
                current = ""
            current = f"{current} {word}".strip()
        line.textLine(current)
        pdf.drawText(line)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def docx_bytes(paragraphs: list[str] = DOCX_PARAGRAPHS) -> bytes:
    import docx

    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def sample_files() -> dict[str, bytes]:
    return {
        "lighthouse.pdf": pdf_bytes(),
        "canteen.docx": docx_bytes(),
        "parking.html": HTML.encode(),
        "compliance.md": MARKDOWN.encode(),
    }


# -- the formats added with the parse report: pptx, xlsx, csv, eml, odt, scanned pdf ------
SLIDES = [
    ("Quarterly results", "Revenue grew in every region.", "Mention the new office."),
    ("Fleet maintenance", "Ferries are serviced every April at the Dunmore yard.", ""),
]
SHEETS = {
    "Sales": [["Region", "Sales"], ["North", 10], ["South", 12.5]],
    "Staff": [["Name", "Role"], ["Ines Ferreira", "harbour master"]],
}
CSV_TEXT = "Region;Sales;Manager\nNorth;10;Aoife Byrne\nSouth;12;Tomás Ruiz\n"


def pptx_bytes(slides: list[tuple[str, str, str]] = SLIDES, table: bool = True) -> bytes:
    """Title and body per slide, speaker notes, and a table on the first slide."""
    from pptx import Presentation
    from pptx.util import Inches

    presentation = Presentation()
    for number, (title, body, notes) in enumerate(slides, start=1):
        slide = presentation.slides.add_slide(presentation.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
        if table and number == 1:
            grid = slide.shapes.add_table(2, 2, Inches(1), Inches(5), Inches(4), Inches(1)).table
            for (row, col), text in zip(
                [(0, 0), (0, 1), (1, 0), (1, 1)], ["Quarter", "Growth", "Q3", "4%"], strict=True
            ):
                grid.cell(row, col).text = text
    buffer = io.BytesIO()
    presentation.save(buffer)
    return buffer.getvalue()


def xlsx_bytes(sheets: dict[str, list[list[object]]] = SHEETS) -> bytes:
    from openpyxl import Workbook

    workbook = Workbook()
    workbook.remove(workbook.active)
    for title, rows in sheets.items():
        sheet = workbook.create_sheet(title)
        for row in rows:
            sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def csv_bytes(text: str = CSV_TEXT) -> bytes:
    return text.encode("utf-8-sig")


def eml_bytes(
    body: str = "The boiler inspection is booked for Tuesday at 9:00.",
    html: str | None = None,
    attachment: bool = True,
) -> bytes:
    from email.message import EmailMessage

    message = EmailMessage()
    message["Subject"] = "Boiler inspection"
    message["From"] = "Facilities <facilities@example.org>"
    message["To"] = "staff@example.org"
    message["Date"] = "Mon, 03 Mar 2025 09:30:00 +0000"
    if html is None:
        message.set_content(body)
    else:
        message.add_alternative(html, subtype="html")
    if attachment:
        message.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf",
                               filename="checklist.pdf")  # fmt: skip
    return message.as_bytes()


ODT_PARAGRAPHS = ["Library opening hours", "The library opens at 8:00 on weekdays."]


def odt_bytes(paragraphs: list[str] = ODT_PARAGRAPHS, table: bool = True) -> bytes:
    """A minimal OpenDocument text, written by hand: a heading, paragraphs and a table."""
    import zipfile
    from xml.sax.saxutils import escape

    heading, *rest = paragraphs
    body = f'<text:h text:outline-level="1">{escape(heading)}</text:h>'
    body += "".join(f"<text:p>{escape(p)}</text:p>" for p in rest)
    if table:
        rows = [["Day", "Hours"], ["Saturday", "10:00-14:00"]]
        cells = "".join(
            "<table:table-row>"
            + "".join(f"<table:table-cell><text:p>{c}</text:p></table:table-cell>" for c in row)
            + "</table:table-row>"
            for row in rows
        )
        body += f'<table:table table:name="Hours">{cells}</table:table>'
    content = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"'
        ' xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"'
        ' xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" office:version="1.2">'
        f"<office:body><office:text>{body}</office:text></office:body></office:document-content>"
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0">'
        '<manifest:file-entry manifest:full-path="/" '
        'manifest:media-type="application/vnd.oasis.opendocument.text"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        "</manifest:manifest>"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.text",
            compress_type=zipfile.ZIP_STORED,
        )  # fmt: skip
        archive.writestr("META-INF/manifest.xml", manifest)
        archive.writestr("content.xml", content)
    return buffer.getvalue()


def scanned_pdf_bytes(lines: list[str], text_page: str | None = None) -> bytes:
    """A PDF whose last page is only a picture of `lines` (no text layer), after an
    optional ordinary text page."""
    from PIL import Image, ImageDraw, ImageFont
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    image = Image.new("L", (1700, 600), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=56)
    for number, line in enumerate(lines):
        draw.text((60, 60 + number * 90), line, fill=0, font=font)
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    if text_page:
        pdf.drawString(50, 780, text_page)
        pdf.showPage()
    width = A4[0] - 100
    pdf.drawImage(ImageReader(image), 50, 500, width=width, height=width * 600 / 1700)
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()
