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
