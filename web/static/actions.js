// What can be done with an answer: copy it (without its [n] markers), regenerate it (the
// same question again, answered by the larger model), and rate it: helpful, or not helpful
// with an optional comment. The stored rating is shown when a conversation is opened.
"use strict";

import { button, el, requestJson } from "./api.js";
import { plainAnswer } from "./citations.js";

const MAX_COMMENT = 2000;

// The clipboard API needs a secure context (https or localhost); plain-http intranet sites
// fall back to a selected, off-screen text box.
async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = el("textarea", "clipboard-helper");
  area.value = text;
  area.setAttribute("readonly", "");
  document.body.append(area);
  area.select();
  const copied = document.execCommand("copy");
  area.remove();
  if (!copied) throw new Error("the browser refused");
}

function copyButton(answer, said) {
  const copy = button("action-copy", "Copy");
  copy.addEventListener("click", async () => {
    try {
      await copyText(plainAnswer(answer.answer));
      said("Copied the answer to the clipboard.");
      copy.textContent = "Copied";
      setTimeout(() => (copy.textContent = "Copy"), 2500);
    } catch (err) {
      said("Could not copy (" + err.message + "): select the answer and copy it instead.", true);
    }
    copy.focus();
  });
  return copy;
}

function regenerateButton(turn) {
  const again = button("action-regenerate", "Regenerate");
  again.title = "Ask this question again, answered by the larger model";
  again.addEventListener("click", () => turn.options.onRegenerate(turn.question));
  return again;
}

// Helpful / Not helpful; "Not helpful" opens a comment box first (the comment is optional).
function ratingControls(turn, turnId, feedback, said) {
  const up = button("action-up", "Helpful");
  const down = button("action-down", "Not helpful");
  const form = el("form", "feedback-form");
  form.id = "feedback-" + turn.key;
  form.hidden = true;
  down.setAttribute("aria-controls", form.id);
  down.setAttribute("aria-expanded", "false");
  const label = el("label", "", "What was wrong with this answer? (optional)");
  const area = el("textarea", "feedback-input");
  area.id = "comment-" + turn.key;
  label.htmlFor = area.id;
  area.rows = 2;
  area.maxLength = MAX_COMMENT;
  const send = el("button", "button small primary", "Send feedback");
  send.type = "submit";
  const cancel = button("", "Cancel");
  const row = el("div", "feedback-buttons");
  row.append(send, cancel);
  form.append(label, area, row);
  const comment = el("p", "feedback-comment muted small");
  comment.hidden = true;
  let stored = null;

  function shown(rating, text) {
    stored = { rating: rating, comment: text || "" };
    up.setAttribute("aria-pressed", String(rating === 1));
    down.setAttribute("aria-pressed", String(rating === -1));
    turn.node.dataset.rating = rating === 1 ? "up" : rating === -1 ? "down" : "";
    comment.textContent = text ? "Your comment: " + text : "";
    comment.hidden = !(rating === -1 && text);
  }

  function close(refocus) {
    form.hidden = true;
    down.setAttribute("aria-expanded", "false");
    if (refocus) down.focus();
  }

  async function rate(rating, text) {
    said("Saving your feedback…");
    const body = text === undefined ? { rating: rating } : { rating: rating, comment: text };
    try {
      const saved = await requestJson("POST", turn.options.feedbackUrl(turnId), body);
      shown(saved.rating, saved.comment);
      said("Thank you: your feedback was saved.");
      return true;
    } catch (err) {
      said("Your feedback was not saved: " + err.message, true);
      return false;
    }
  }

  up.setAttribute("aria-pressed", "false");
  down.setAttribute("aria-pressed", "false");
  if (feedback) shown(feedback.rating, feedback.comment);
  up.addEventListener("click", () => {
    close(false);
    rate(1);
  });
  down.addEventListener("click", () => {
    if (!form.hidden) return close(false);
    form.hidden = false;
    down.setAttribute("aria-expanded", "true");
    area.value = stored && stored.rating === -1 ? stored.comment : "";
    area.focus();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (await rate(-1, area.value)) close(true);
  });
  cancel.addEventListener("click", () => close(true));
  area.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.stopPropagation();
      close(true);
    }
  });
  return { up: up, down: down, form: form, comment: comment };
}

export function answerActions(turn, answer, turnId, feedback) {
  const box = el("div", "turn-actions");
  box.setAttribute("role", "group");
  box.setAttribute("aria-label", "Answer actions");
  const status = el("span", "action-status small");
  status.setAttribute("role", "status");
  const said = (text, failed) => {
    status.textContent = text;
    status.classList.toggle("failed", Boolean(failed));
  };
  const wrapper = el("div", "turn-actions-wrap");
  wrapper.append(box);
  if (!answer.declined) box.append(copyButton(answer, said));
  if (turn.options.onRegenerate) box.append(regenerateButton(turn));
  if (turnId) {
    const rating = ratingControls(turn, turnId, feedback, said);
    box.append(rating.up, rating.down);
    wrapper.append(rating.form, rating.comment);
  }
  box.append(status);
  return wrapper;
}
