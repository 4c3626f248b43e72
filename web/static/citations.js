// Citations of an answer: each [n] marker is a link to the source view at its supporting
// sentence, with that sentence in a tooltip shown on hover and on keyboard focus (Escape
// hides it); under the answer, each citation's sentence quoted, its passage on request.
"use strict";

import { el } from "./api.js";

const MARKER = /\[(\d{1,2})\]/g;
const HIDE_DELAY_MS = 200; // time to move the pointer from the marker onto its tooltip
let tips = 0;
let open = null; // the tooltip shown now: one at a time

export function flat(text) {
  return String(text || "").replace(/\s+/g, " ").trim();
}

// The answer as text to paste: without its [n] markers.
export function plainAnswer(text) {
  return String(text || "").replace(/\s*\[\d{1,2}\]/g, "").trim();
}

// The start of a passage, without the heading lines its context line already names.
export function snippet(text) {
  const short = flat(String(text || "").replace(/^#{1,6}\s.*$/gm, "")) || flat(text);
  return short.length > 220 ? short.slice(0, 220) + "…" : short;
}

export function where(passage) {
  return passage.filename + (passage.page ? ", page " + passage.page : "");
}

// The supporting sentence's offsets inside its passage's text, or null if they do not fit.
function sentenceSpan(citation) {
  const from = citation.sentence_start - citation.start;
  const to = citation.sentence_end - citation.start;
  const fits = Number.isInteger(from) && Number.isInteger(to);
  return fits && from >= 0 && from < to && to <= String(citation.text).length ? [from, to] : null;
}

// The source view at the passage, and at the supporting sentence when there is one.
export function sourceUrl(sourcePath, passage) {
  const params = new URLSearchParams({ chunk: passage.chunk_id });
  const sentence = passage.number !== undefined && sentenceSpan(passage);
  if (sentence) {
    params.set("start", passage.sentence_start);
    params.set("end", passage.sentence_end);
  }
  const path = sourcePath.replace("DOCUMENT_ID", encodeURIComponent(passage.document_id));
  return path + "?" + params + (sentence ? "#sentence" : "#cited");
}

function hide() {
  if (!open) return;
  clearTimeout(open.timer);
  open.tip.hidden = true;
  open = null;
}

function show(tip) {
  if (open && open.tip === tip) {
    clearTimeout(open.timer);
    return;
  }
  hide();
  tip.hidden = false; // under the answer, across its width: never wider than the screen
  open = { tip: tip, timer: 0 };
}

function hideSoon(tip) {
  if (open && open.tip === tip) {
    clearTimeout(open.timer);
    open.timer = setTimeout(hide, HIDE_DELAY_MS);
  }
}

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") hide();
});

// One marker: the link, and its tooltip in `tipBox` (outside the answer's text, so the
// answer reads and copies as it was written).
function marker(citation, label, context) {
  const link = el("a", "citation", label);
  link.href = sourceUrl(context.sourcePath, citation);
  link.setAttribute("aria-label", "source " + citation.number + ", " + where(citation));
  const tip = el("span", "citation-tip");
  tip.id = "tip-" + ++tips;
  tip.setAttribute("role", "tooltip");
  tip.hidden = true;
  const sentence = flat(citation.sentence) || snippet(citation.text);
  tip.append(el("span", "tip-sentence", sentence), el("span", "tip-where", where(citation)));
  link.setAttribute("aria-describedby", tip.id);
  link.addEventListener("mouseenter", () => show(tip));
  link.addEventListener("focus", () => show(tip));
  link.addEventListener("mouseleave", () => hideSoon(tip));
  link.addEventListener("blur", () => open && open.tip === tip && hide());
  tip.addEventListener("mouseenter", () => show(tip));
  tip.addEventListener("mouseleave", () => hideSoon(tip));
  context.tipBox.append(tip);
  return link;
}

// Answer text with each known [n] marker as a link to its cited sentence.
// context: { sourcePath, tipBox (where tooltips go, in the answer's positioned box) }
export function withMarkers(text, citations, context) {
  const fragment = document.createDocumentFragment();
  let last = 0;
  for (const match of text.matchAll(MARKER)) {
    const citation = citations.get(Number(match[1]));
    if (!citation) continue;
    fragment.append(text.slice(last, match.index).replace(/\s+$/, ""));
    fragment.append(marker(citation, match[0], context));
    last = match.index + match[0].length;
  }
  fragment.append(text.slice(last));
  return fragment;
}

function sourceHead(sourcePath, passage, label) {
  const head = el("div", "source-head");
  head.append(el("span", "source-number", label));
  const link = el("a", "source-link", passage.filename);
  link.href = sourceUrl(sourcePath, passage);
  head.append(link);
  if (passage.page) head.append(el("span", "muted small", "page " + passage.page));
  if (passage.context) head.append(el("span", "source-context muted small", passage.context));
  return head;
}

// The passage, folded away until asked for, with the sentence (if any) marked.
function wholePassage(text, span) {
  const details = el("details", "passage");
  details.append(el("summary", "", "Show the whole passage"));
  const body = el("p", "passage-text");
  text = String(text || "");
  if (span) {
    body.append(text.slice(0, span[0]), el("mark", "", text.slice(span[0], span[1])));
    body.append(text.slice(span[1]));
  } else {
    body.textContent = text;
  }
  details.append(body);
  return details;
}

// One citation: the file, the exact supporting sentence, and its passage on request.
export function citationItem(sourcePath, citation, idPrefix) {
  const item = el("li", "source");
  item.id = idPrefix + citation.number;
  item.append(sourceHead(sourcePath, citation, "[" + citation.number + "]"));
  const sentence = flat(citation.sentence);
  if (sentence) {
    const quote = el("blockquote", "support");
    quote.append(el("mark", "", sentence));
    item.append(quote);
  } else {
    item.append(el("p", "source-snippet", snippet(citation.text))); // no sentence to quote
  }
  item.append(wholePassage(citation.text, sentenceSpan(citation)));
  return item;
}

export function suggestionItem(sourcePath, passage, index) {
  const item = el("li", "source suggestion");
  item.append(sourceHead(sourcePath, passage, String(index + 1) + "."));
  item.append(el("p", "source-snippet", snippet(passage.text)), wholePassage(passage.text, null));
  return item;
}
