// One turn of a conversation: the question, a status line while it is answered, the answer
// sentence by sentence as it streams (the final `answer` event is authoritative and replaces
// what was streamed), its citations, and what can be done with it (actions.js).
"use strict";

import { el } from "./api.js";
import { answerActions } from "./actions.js";
import { citationItem, suggestionItem, withMarkers } from "./citations.js";

let turns = 0;

const DECLINED_TEXT =
  "The assistant found no answer it could check against your documents, so it does not guess.";

// options: { sourcePath, modelTitles, feedbackUrl(turnId), onRegenerate(question), live }
export class Turn {
  constructor(question, options) {
    this.key = "t" + ++turns;
    this.question = question.trim();
    this.options = options;
    this.cited = new Map();
    this.node = el("article", "turn");
    this.node.dataset.state = options.live ? "working" : "loaded";
    const heading = el("h2", "turn-question", this.question);
    heading.id = "question-" + this.key;
    this.node.setAttribute("aria-labelledby", heading.id);

    this.statusLine = el("p", "status-line muted small");
    if (options.live) this.statusLine.setAttribute("role", "status");
    this.spinner = el("span", "spinner");
    this.spinner.setAttribute("aria-hidden", "true");
    this.spinner.hidden = !options.live;
    this.statusText = el("span", "status-text");
    this.statusLine.append(this.spinner, this.statusText);

    this.declined = el("div", "declined");
    this.declined.hidden = true;
    this.declined.append(el("h3", "", "Not found in your documents"), el("p", "", DECLINED_TEXT));

    // Announced once complete: aria-busy is set while sentences are still arriving.
    this.region = el("div", "answer-region");
    if (options.live) {
      this.region.setAttribute("aria-live", "polite");
      this.region.setAttribute("aria-busy", "false");
    }
    this.answerBox = el("p", "answer");
    this.tipBox = el("div", "citation-tips");
    this.region.append(this.answerBox, this.tipBox);

    this.note = el("p", "turn-note");
    this.note.hidden = true;
    this.sourcesBlock = el("div", "sources-block");
    this.sourcesBlock.hidden = true;
    this.sourcesTitle = el("h3", "sources-title", "Sources");
    this.sources = el("ol", "sources");
    this.sourcesBlock.append(this.sourcesTitle, this.sources);
    this.actions = el("div", "turn-actions-box");

    this.node.append(heading, this.statusLine, this.declined, this.region, this.note);
    this.node.append(this.sourcesBlock, this.actions);
  }

  get state() {
    return this.node.dataset.state;
  }

  setStatus(text, working) {
    this.statusText.textContent = text;
    this.spinner.hidden = !working;
  }

  markers(text, citations) {
    const context = { sourcePath: this.options.sourcePath, tipBox: this.tipBox };
    return withMarkers(text, citations, context);
  }

  clear() {
    this.answerBox.replaceChildren();
    this.tipBox.replaceChildren();
    this.answerBox.hidden = false;
    this.answerBox.classList.remove("withheld");
    this.declined.hidden = true;
    this.sources.replaceChildren();
    this.sourcesBlock.hidden = true;
    this.note.hidden = true;
    this.actions.replaceChildren();
    if (this.options.live) this.region.setAttribute("aria-busy", "false");
  }

  // -- the stream --------------------------------------------------------------------------
  status(data) {
    const text = String(data.text || "");
    this.setStatus(text.charAt(0).toUpperCase() + text.slice(1) + "…", true);
  }

  text(data) {
    const prefix = "source-" + this.key + "-";
    for (const citation of data.citations || []) {
      this.cited.set(citation.number, citation);
      this.sources.append(citationItem(this.options.sourcePath, citation, prefix));
    }
    this.sourcesTitle.textContent = "Sources";
    this.sourcesBlock.hidden = this.cited.size === 0;
    this.region.setAttribute("aria-busy", "true");
    const piece = el("span", "piece streamed");
    piece.append(this.markers(String(data.text || ""), this.cited));
    this.answerBox.append(piece);
    this.node.dataset.state = "streaming";
    this.setStatus("Writing the answer…", true);
  }

  // The whole answer (from the stream's `answer` event, or a stored turn).
  answer(answer, turnId, feedback) {
    this.clear();
    const sourcePath = this.options.sourcePath;
    if (answer.declined) {
      this.declined.hidden = false;
      this.answerBox.hidden = true;
      this.sourcesTitle.textContent = "You may want to look at";
      const suggestions = answer.suggestions || [];
      suggestions.forEach((p, i) => this.sources.append(suggestionItem(sourcePath, p, i)));
      this.sourcesBlock.hidden = suggestions.length === 0;
    } else {
      const citations = new Map((answer.citations || []).map((c) => [c.number, c]));
      this.answerBox.append(this.markers(String(answer.answer || ""), citations));
      this.sourcesTitle.textContent = "Sources";
      const prefix = "source-" + this.key + "-";
      for (const citation of citations.values()) {
        this.sources.append(citationItem(sourcePath, citation, prefix));
      }
      this.sourcesBlock.hidden = citations.size === 0;
    }
    this.node.dataset.state = answer.declined ? "declined" : "answered";
    if (turnId) this.node.dataset.turnId = turnId;
    this.setStatus(this.summary(answer), false);
    this.actions.append(answerActions(this, answer, turnId, feedback || null));
  }

  // A stored turn, as the reader may see it now.
  load(turn) {
    if (turn.withheld) {
      this.clear();
      this.answerBox.textContent = String(turn.answer.answer || "");
      this.answerBox.classList.add("withheld");
      this.node.dataset.state = "withheld";
      this.node.dataset.turnId = turn.id;
      this.setStatus("Withheld", false);
      return;
    }
    this.answer(turn.answer, turn.id, turn.feedback);
  }

  // Stopped by the reader: what was shown stays, marked as incomplete.
  stop() {
    this.node.dataset.state = "stopped";
    this.region.setAttribute("aria-busy", "false");
    this.setStatus("Stopped", false);
    const shown = this.answerBox.textContent.trim() !== "";
    this.note.textContent = shown
      ? "Stopped: this answer is incomplete."
      : "Stopped before any of the answer was written.";
    this.note.hidden = false;
  }

  summary(answer) {
    const total = Number(answer.total_seconds);
    const titles = this.options.modelTitles || {};
    const model = titles[answer.model] || answer.model || "";
    if (!Number.isFinite(total)) return "";
    const seconds = total < 0.1 ? "under 0.1 s" : total.toFixed(1) + " s";
    if (answer.declined) {
      const routed = answer.routed ? " · also checked with the larger model, " + model : "";
      return "Searched in " + seconds + routed;
    }
    if (answer.route === "large") {
      return "Answered in " + seconds + " by the larger model, " + model;
    }
    return "Answered in " + seconds + " · " + model;
  }
}
