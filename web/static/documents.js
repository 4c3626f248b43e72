// The Documents page: keep the status table current while anything is queued, parsing or embedding.
"use strict";

(function () {
  const table = document.getElementById("documents-table");
  const body = document.getElementById("documents-body");
  const counts = document.getElementById("counts");
  const empty = document.getElementById("empty");
  const PENDING = new Set(["queued", "parsing", "embedding"]);
  const INTERVAL_MS = 2000;

  const el = DocumentRows.el;

  function size(bytes) {
    if (bytes < 1024) return bytes + " bytes";
    let value = bytes / 1024, unit = "KB";
    if (value >= 1024) { value /= 1024; unit = "MB"; }
    return value.toFixed(1).replace(/\.0$/, "") + " " + unit;
  }

  function when(iso) {
    return iso ? iso.slice(0, 16).replace("T", " ") + " UTC" : "";
  }

  function row(doc) {
    const tr = DocumentRows.startRow(doc);
    const name = DocumentRows.nameCell(doc, table.dataset.source);
    const status = DocumentRows.statusCell(doc);
    const actions = el("td", "actions");
    // Staff download checked files only; admins also failed or older ones (as attachments).
    if (table.dataset.admin || (doc.status === "indexed" && doc.current)) {
      const download = el("a", "button link", "Download");
      download.href = table.dataset.download.replace("DOC", encodeURIComponent(doc.id));
      actions.append(download);
    }
    function postButton(url, label, className, confirmText) {
      const form = el("form", "inline");
      form.method = "post";
      form.action = url.replace("DOC", encodeURIComponent(doc.id));
      if (confirmText) form.dataset.confirm = confirmText;
      const csrf = el("input");
      csrf.type = "hidden";
      csrf.name = "csrf_token";
      csrf.value = table.dataset.csrf;
      const button = el("button", className, label);
      button.type = "submit";
      form.append(csrf, button);
      return form;
    }
    if (table.dataset.admin && (doc.status === "indexed" || doc.status === "failed")) {
      const label = doc.status === "failed" ? "Retry" : "Re-ingest";
      actions.append(postButton(table.dataset.reingest, label, "button link"));
    }
    if (table.dataset.admin) {
      const confirmText = "Delete " + doc.filename + "?";
      actions.append(postButton(table.dataset.delete, "Delete", "button link danger", confirmText));
    }
    tr.append(
      name,
      el("td", null, doc.collection + (doc.version > 1 ? " v" + doc.version : "")),
      status,
      el("td", "num", doc.status === "indexed" ? doc.chunks : ""),
      el("td", "num", doc.pages || ""),
      el("td", "num", size(doc.size_bytes)),
      el("td", "updated", when(doc.updated_at)),
      actions,
    );
    return tr;
  }

  function render(data) {
    body.replaceChildren(...data.documents.map(row));
    const c = data.counts;
    counts.textContent = c.indexed + " indexed · " + (c.queued + c.parsing + c.embedding) +
      " in progress · " + c.failed + " failed";
    empty.hidden = data.documents.length > 0;
  }

  function pending() {
    return Array.from(body.querySelectorAll("tr")).some((tr) => PENDING.has(tr.dataset.status));
  }

  async function poll() {
    try {
      const response = await fetch(table.dataset.api, { headers: { Accept: "application/json" } });
      if (response.ok) render(await response.json());
    } catch (err) {
      // The server may be restarting: keep the table as it is and try again.
    }
    if (pending()) setTimeout(poll, INTERVAL_MS);
  }

  body.addEventListener("submit", (event) => {
    const message = event.target.dataset.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });

  if (pending()) setTimeout(poll, INTERVAL_MS);
})();
