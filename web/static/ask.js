// The Ask page: POST the question and render the Server-Sent Events stream as it arrives:
// `status` while it works, each verified sentence (`text`) with its citations as it comes,
// then the final `answer`, which is authoritative and replaces what was streamed. On an
// `error`, or a stream that ends without an answer, nothing partial stays on screen.
"use strict";

(function () {
  const byId = (id) => document.getElementById(id);
  const form = byId("ask-form");
  const input = byId("question");
  const button = byId("ask-button");
  const errorBox = byId("ask-error");
  const counter = byId("question-count");
  const result = byId("result");
  const questionTitle = byId("result-question");
  const spinner = byId("spinner");
  const statusText = byId("status-text");
  const answerRegion = byId("answer-region");
  const answerBox = byId("answer");
  const declinedBox = byId("declined");
  const sourcesBlock = byId("sources-block");
  const sourcesTitle = byId("sources-title");
  const sourcesList = byId("sources");
  const maxChars = Number(input.dataset.max);
  const modelTitles = JSON.parse(form.dataset.models || "{}"); // file name -> display name
  const MARKER = /\[(\d{1,2})\]/g;
  let busy = false;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function flat(text) {
    return text.replace(/\s+/g, " ").trim();
  }

  // The start of a passage, without the heading lines its context line already names.
  function snippet(text) {
    const short = flat(text.replace(/^#{1,6}\s.*$/gm, "")) || flat(text);
    return short.length > 220 ? short.slice(0, 220) + "…" : short;
  }

  function where(passage) {
    return passage.filename + (passage.page ? ", page " + passage.page : "");
  }

  // The supporting sentence's offsets inside its passage's text, or null if they do not fit.
  function sentenceSpan(citation) {
    const from = citation.sentence_start - citation.start;
    const to = citation.sentence_end - citation.start;
    const fits = Number.isInteger(from) && Number.isInteger(to);
    return fits && from >= 0 && from < to && to <= citation.text.length ? [from, to] : null;
  }

  // The source view at the passage, and at the supporting sentence when there is one.
  function sourceUrl(passage) {
    const params = new URLSearchParams({ chunk: passage.chunk_id });
    const sentence = passage.number !== undefined && sentenceSpan(passage);
    if (sentence) {
      params.set("start", passage.sentence_start);
      params.set("end", passage.sentence_end);
    }
    const documentId = encodeURIComponent(passage.document_id);
    const path = form.dataset.source.replace("DOCUMENT_ID", documentId);
    return path + "?" + params + (sentence ? "#sentence" : "#cited");
  }

  // Answer text with each known [n] marker as a link to its cited sentence.
  function withMarkers(text, citations) {
    const fragment = document.createDocumentFragment();
    let last = 0;
    for (const match of text.matchAll(MARKER)) {
      const citation = citations.get(Number(match[1]));
      if (!citation) continue;
      fragment.append(text.slice(last, match.index).replace(/\s+$/, ""));
      const link = el("a", "citation", match[0]);
      link.href = sourceUrl(citation);
      link.title = where(citation);
      link.setAttribute("aria-label", "source " + citation.number + ", " + where(citation));
      fragment.append(link);
      last = match.index + match[0].length;
    }
    fragment.append(text.slice(last));
    return fragment;
  }

  function sourceHead(passage, label) {
    const head = el("div", "source-head");
    head.append(el("span", "source-number", label));
    const link = el("a", "source-link", passage.filename);
    link.href = sourceUrl(passage);
    head.append(link);
    if (passage.page) head.append(el("span", "muted small", "page " + passage.page));
    if (passage.context) head.append(el("span", "source-context muted small", passage.context));
    return head;
  }

  // One citation: the file, the exact supporting sentence, and its passage on request.
  function citationItem(citation) {
    const item = el("li", "source");
    item.id = "source-" + citation.number;
    item.append(sourceHead(citation, "[" + citation.number + "]"));
    const sentence = flat(citation.sentence || "");
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

  // The passage, folded away until asked for, with the sentence (if any) marked.
  function wholePassage(text, span) {
    const details = el("details", "passage");
    details.append(el("summary", "", "Show the whole passage"));
    const body = el("p", "passage-text");
    if (span) {
      body.append(text.slice(0, span[0]), el("mark", "", text.slice(span[0], span[1])));
      body.append(text.slice(span[1]));
    } else {
      body.textContent = text;
    }
    details.append(body);
    return details;
  }

  function suggestionItem(passage, index) {
    const item = el("li", "source suggestion");
    item.append(sourceHead(passage, String(index + 1) + "."));
    item.append(el("p", "source-snippet", snippet(passage.text)), wholePassage(passage.text, null));
    return item;
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function setStatus(text, working) {
    statusText.textContent = text;
    spinner.hidden = !working;
  }

  function clearAnswer() {
    answerBox.replaceChildren();
    answerBox.hidden = false;
    declinedBox.hidden = true;
    sourcesList.replaceChildren();
    sourcesBlock.hidden = true;
    answerRegion.setAttribute("aria-busy", "false");
  }

  // Nothing partial may look like an answer: remove it all and say what went wrong.
  function fail(message) {
    clearAnswer();
    result.hidden = true;
    result.dataset.state = "error";
    showError(message);
  }

  function summary(answer) {
    const total = Number(answer.total_seconds);
    const seconds = total < 0.1 ? "under 0.1 s" : total.toFixed(1) + " s";
    const model = modelTitles[answer.model] || answer.model;
    if (answer.declined) {
      const routed = answer.routed ? " · also checked with the larger model, " + model : "";
      return "Searched in " + seconds + routed;
    }
    if (answer.route === "large") {
      return "Answered in " + seconds + " by the larger model, " + model;
    }
    return "Answered in " + seconds + " · " + model;
  }

  // The stream's state for one question; `answer` is authoritative and replaces the rest.
  function renderer() {
    const cited = new Map();
    return {
      answered: false,
      status(data) {
        setStatus(data.text.charAt(0).toUpperCase() + data.text.slice(1) + "…", true);
      },
      text(data) {
        for (const citation of data.citations || []) {
          cited.set(citation.number, citation);
          sourcesList.append(citationItem(citation));
        }
        sourcesTitle.textContent = "Sources";
        sourcesBlock.hidden = cited.size === 0;
        answerRegion.setAttribute("aria-busy", "true");
        const piece = el("span", "piece streamed");
        piece.append(withMarkers(data.text, cited));
        answerBox.append(piece);
        result.dataset.state = "streaming";
        setStatus("Writing the answer…", true);
      },
      answer(answer) {
        this.answered = true;
        clearAnswer();
        if (answer.declined) {
          declinedBox.hidden = false;
          answerBox.hidden = true;
          sourcesTitle.textContent = "You may want to look at";
          answer.suggestions.forEach((p, i) => sourcesList.append(suggestionItem(p, i)));
          sourcesBlock.hidden = answer.suggestions.length === 0;
        } else {
          const citations = new Map(answer.citations.map((c) => [c.number, c]));
          answerBox.append(withMarkers(answer.answer, citations));
          sourcesTitle.textContent = "Sources";
          answer.citations.forEach((citation) => sourcesList.append(citationItem(citation)));
          sourcesBlock.hidden = answer.citations.length === 0;
        }
        result.dataset.state = answer.declined ? "declined" : "answered";
        setStatus(summary(answer), false);
      },
    };
  }

  // Parse "event: x\ndata: {...}\n\n" blocks from the streamed body.
  async function readEvents(response, handle) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
        }
        if (data.length && handle(event, JSON.parse(data.join("\n"))) === false) {
          await reader.cancel(); // nothing after an error is shown; free the server's slot
          return;
        }
      }
      if (done) return;
    }
  }

  async function post(question) {
    return fetch(form.dataset.api, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "text/event-stream",
        "X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content,
      },
      body: JSON.stringify({ question: question }),
    });
  }

  async function ask(question) {
    busy = true;
    showError("");
    clearAnswer(); // the last answer goes at once: it is not the answer to this question
    result.hidden = true;
    button.disabled = true;
    button.textContent = "Asking…";
    try {
      let response;
      try {
        response = await post(question);
      } catch (err) {
        fail("Could not reach the assistant: " + err.message);
        return;
      }
      if (!response.ok) {
        let message = "The request failed (" + response.status + ").";
        try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
        fail(message);
        return;
      }
      clearAnswer();
      questionTitle.textContent = question.trim();
      result.hidden = false;
      result.dataset.state = "working";
      setStatus("Searching your documents…", true);
      const view = renderer();
      let failure = "";
      try {
        await readEvents(response, (event, data) => {
          if (event === "error") {
            failure = data.error || "the assistant could not answer";
            return false;
          }
          const known = event === "status" || event === "text" || event === "answer";
          if (known && !view.answered) view[event](data);
          return true;
        });
      } catch (err) {
        failure = "The answer was interrupted (" + err.message + "); please ask again.";
      }
      if (failure) fail(failure);
      else if (!view.answered) fail("The answer was interrupted; please ask again.");
    } finally {
      busy = false;
      button.disabled = false;
      button.textContent = "Ask";
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!busy) ask(input.value);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  input.addEventListener("input", () => {
    const length = input.value.length;
    counter.textContent = length + " / " + maxChars + " characters";
    counter.classList.toggle("over", length > maxChars);
  });
})();
