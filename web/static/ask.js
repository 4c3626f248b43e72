// The Ask page: POST the question, render the Server-Sent Events stream as it arrives.
"use strict";

(function () {
  const form = document.getElementById("ask-form");
  const input = document.getElementById("question");
  const button = document.getElementById("ask-button");
  const errorBox = document.getElementById("ask-error");
  const counter = document.getElementById("question-count");
  const result = document.getElementById("result");
  const statusLine = document.getElementById("status");
  const answerBox = document.getElementById("answer");
  const declinedBox = document.getElementById("declined");
  const sourcesBlock = document.getElementById("sources-block");
  const sourcesTitle = document.getElementById("sources-title");
  const sourcesList = document.getElementById("sources");
  const maxChars = Number(input.dataset.max);

  function sourceUrl(passage) {
    return form.dataset.source
      .replace("DOC", encodeURIComponent(passage.document_id))
      .replace("CHUNK", encodeURIComponent(passage.chunk_id)) + "#cited";
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function snippet(text) {
    const flat = text.replace(/\s+/g, " ").trim();
    return flat.length > 220 ? flat.slice(0, 220) + "…" : flat;
  }

  // Citation markers like [2] become links to the cited passage; everything else is text.
  function renderAnswer(text, citations) {
    const byNumber = new Map(citations.map((c) => [c.number, c]));
    answerBox.replaceChildren();
    let last = 0;
    for (const match of text.matchAll(/\[(\d{1,2})\]/g)) {
      const citation = byNumber.get(Number(match[1]));
      if (!citation) continue;
      answerBox.append(text.slice(last, match.index));
      const link = el("a", "citation", match[0]);
      link.href = sourceUrl(citation);
      link.title = citation.filename + (citation.page ? ", page " + citation.page : "");
      answerBox.append(link);
      last = match.index + match[0].length;
    }
    answerBox.append(text.slice(last));
  }

  function renderSources(title, passages, numbered) {
    sourcesList.replaceChildren();
    sourcesTitle.textContent = title;
    passages.forEach((passage, i) => {
      const item = el("li", "source");
      const head = el("div", "source-head");
      const number = numbered ? passage.number : i + 1;
      head.append(el("span", "source-number", "[" + number + "]"));
      const link = el("a", "source-link", passage.filename);
      link.href = sourceUrl(passage);
      head.append(link);
      if (passage.page) head.append(el("span", "muted", "page " + passage.page));
      item.append(head, el("p", "source-snippet", snippet(passage.text)));
      sourcesList.append(item);
    });
    sourcesBlock.hidden = passages.length === 0;
  }

  function onAnswer(answer) {
    const verb = answer.declined ? "Searched in " : "Answered in ";
    statusLine.textContent = verb + answer.total_seconds.toFixed(1) + " s · " + answer.model;
    if (answer.declined) {
      declinedBox.hidden = false;
      answerBox.textContent = "";
      answerBox.hidden = true;
      renderSources("You may want to look at", answer.suggestions, false);
    } else {
      renderAnswer(answer.answer, answer.citations);
      renderSources("Sources", answer.citations, true);
    }
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
        if (data.length) handle(event, JSON.parse(data.join("\n")));
      }
      if (done) return;
    }
  }

  async function ask(question) {
    showError("");
    button.disabled = true;
    button.textContent = "Thinking…";
    let answered = false;
    try {
      const response = await fetch(form.dataset.api, {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          Accept: "text/event-stream",
          "X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content,
        },
        body: JSON.stringify({ question: question }),
      });
      if (!response.ok) {
        let message = "The request failed (" + response.status + ").";
        try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
        showError(message);
        return;
      }
      result.hidden = false;
      declinedBox.hidden = true;
      answerBox.hidden = false;
      answerBox.textContent = "";
      sourcesBlock.hidden = true;
      statusLine.textContent = "Searching your documents…";
      await readEvents(response, (event, data) => {
        if (event === "status") {
          statusLine.textContent = data.text.charAt(0).toUpperCase() + data.text.slice(1) + "…";
        } else if (event === "answer") {
          answered = true;
          onAnswer(data);
        } else if (event === "error") {
          showError(data.error);
        }
      });
      if (!answered && errorBox.hidden) showError("The answer was interrupted; please ask again.");
      if (!answered) result.hidden = true;
    } catch (err) {
      showError("Could not reach the assistant: " + err.message);
    } finally {
      button.disabled = false;
      button.textContent = "Ask";
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ask(input.value);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
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
