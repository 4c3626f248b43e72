// The batch page: follow the batch's progress until every file is indexed or failed.
"use strict";

(function () {
  const box = document.getElementById("batch");
  const bar = document.getElementById("batch-progress");
  const summary = document.getElementById("batch-summary");
  const body = document.getElementById("batch-body");
  const INTERVAL_MS = 2000;

  const el = DocumentRows.el;

  function report(doc) {
    const r = doc.report;
    if (!r) return "";
    const parts = [r.characters + " characters"];
    if (r.pages != null) parts.unshift(r.pages + " page(s)"); // text formats have no pages
    if (r.ocr_pages && r.ocr_pages.length) parts.push(r.ocr_pages.length + " OCR'd");
    if (r.tables) parts.push(r.tables + " table(s)");
    if (r.warnings && r.warnings.length) parts.push(r.warnings.join("; "));
    return parts.join(" · ");
  }

  function row(doc) {
    const tr = DocumentRows.startRow(doc);
    tr.append(
      DocumentRows.nameCell(doc, box.dataset.source),
      el("td", null, doc.version),
      DocumentRows.statusCell(doc),
      el("td", "muted small", report(doc)),
    );
    return tr;
  }

  function render(data) {
    bar.max = data.total;
    bar.value = data.finished;
    let text = data.finished + " of " + data.total + " done · " + data.counts.indexed +
      " indexed · " + data.counts.failed + " failed";
    if (data.eta_seconds !== null && data.finished < data.total) {
      text += " · about " + Math.round(data.eta_seconds) + " s left";
    }
    summary.textContent = text;
    body.replaceChildren(...data.documents.map(row));
    return data.finished < data.total;
  }

  async function poll() {
    let again = true;
    try {
      const response = await fetch(box.dataset.api, { headers: { Accept: "application/json" } });
      if (response.ok) again = render(await response.json());
    } catch (err) {
      // The server may be restarting: try again.
    }
    if (again) setTimeout(poll, INTERVAL_MS);
  }

  poll();
})();
