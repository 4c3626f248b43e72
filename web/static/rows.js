// Table cells shared by the Documents and batch pages: one place renders a document's
// name (a link once indexed) and its status with the failure reason.
"use strict";

window.DocumentRows = (function () {
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function startRow(doc) {
    const tr = el("tr");
    tr.dataset.id = doc.id;
    tr.dataset.status = doc.status;
    return tr;
  }

  // sourceUrl has "DOC" where the document id goes.
  function nameCell(doc, sourceUrl) {
    const name = el("td", "filename");
    if (doc.status === "indexed") {
      const link = el("a", null, doc.filename);
      link.href = sourceUrl.replace("DOC", encodeURIComponent(doc.id));
      name.append(link);
    } else {
      name.textContent = doc.filename;
    }
    return name;
  }

  function statusCell(doc) {
    const status = el("td");
    status.append(el("span", "status status-" + doc.status, doc.status));
    if (doc.error) status.append(el("div", "reason", doc.error));
    return status;
  }

  return { el: el, startRow: startRow, nameCell: nameCell, statusCell: statusCell };
})();
