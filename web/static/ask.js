// The Ask page: a conversation with the documents. The question is POSTed with the open
// conversation's id and the Server-Sent Events stream is rendered as it arrives (turns.js):
// `status` while it works, each verified sentence (`text`) as it comes, then the final
// `answer`. Stop aborts the request and keeps what was shown, marked as stopped; on an
// `error`, or a stream that ends without an answer, nothing partial stays on screen.
// The open conversation is in the URL (?c=<id>), so a reload or Back reopens it.
"use strict";

import { csrfToken, failure, readEvents, requestJson } from "./api.js";
import { Sidebar } from "./conversations.js";
import { Turn } from "./turns.js";

const byId = (id) => document.getElementById(id);
const chat = byId("chat");
const form = byId("ask-form");
const input = byId("question");
const askButton = byId("ask-button");
const stopButton = byId("stop-button");
const errorBox = byId("ask-error");
const counter = byId("question-count");
const thread = byId("thread");
const threadTitle = byId("thread-title");
const intro = byId("thread-intro");
const toggle = byId("sidebar-toggle");
const sidebarBox = byId("sidebar");
const newButton = byId("new-conversation");
const maxChars = Number(input.dataset.max);
const modelTitles = JSON.parse(chat.dataset.models || "{}"); // file name -> display name

const urls = {
  page: chat.dataset.page,
  ask: chat.dataset.ask,
  list: chat.dataset.conversations,
  one: (id) => chat.dataset.conversation.replace("CONVERSATION_ID", encodeURIComponent(id)),
  feedback: (turnId) => chat.dataset.feedback.replace(/\/0\/feedback$/, "/" + turnId + "/feedback"),
  at: (id) => chat.dataset.page + (id ? "?c=" + encodeURIComponent(id) : ""),
};

let current = null; // the open conversation's id; null until the first answer starts one
let streaming = null; // { controller } while an answer streams
let loading = 0; // the latest conversation asked for: older responses are ignored
let ready = Promise.resolve(); // the conversation being opened: a question waits for it

const sidebar = new Sidebar(byId("conversations"), byId("conversations-status"), newButton, {
  listUrl: urls.list,
  itemUrl: urls.one,
  pageUrl: urls.at,
  onSelect: (id) => {
    setSidebar(false);
    openAt(id, true).then(() => input.focus());
  },
  onDeleted: (id) => {
    if (id === current) startNew(false, false);
  },
  onRenamed: (renamed) => {
    if (renamed.id === current) setTitle(renamed.title);
  },
});

function turnOptions(live) {
  return {
    sourcePath: chat.dataset.source,
    modelTitles: modelTitles,
    feedbackUrl: urls.feedback,
    onRegenerate: (question) => ask(question, true),
    live: live,
  };
}

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = !message;
}

function setTitle(title) {
  threadTitle.textContent = title || "Ask your documents";
  document.title = (title || "Ask") + " · Document assistant";
}

function setUrl(id, push) {
  const url = urls.at(id);
  if (location.pathname + location.search === url) return;
  history[push ? "pushState" : "replaceState"]({ c: id }, "", url);
}

function setBusy(busy) {
  askButton.disabled = busy;
  askButton.textContent = busy ? "Asking…" : "Ask";
  stopButton.hidden = !busy;
  chat.dataset.busy = String(busy);
  for (const again of thread.querySelectorAll(".action-regenerate")) {
    if (busy) again.setAttribute("aria-disabled", "true");
    else again.removeAttribute("aria-disabled");
  }
}

function setSidebar(open) {
  chat.classList.toggle("sidebar-open", open);
  toggle.setAttribute("aria-expanded", String(open));
}

function stopStreaming() {
  if (streaming) streaming.controller.abort();
}

function startNew(push, focus) {
  stopStreaming();
  loading++;
  current = null;
  thread.replaceChildren();
  intro.hidden = false;
  showError("");
  setTitle("");
  setUrl(null, push);
  sidebar.setCurrent(null);
  if (focus) input.focus();
}

async function openConversation(id, push) {
  stopStreaming();
  const token = ++loading;
  showError("");
  let conversation;
  try {
    conversation = await requestJson("GET", urls.one(id));
  } catch (err) {
    if (token !== loading) return;
    startNew(false, false);
    const gone = "That conversation was not found: it may have been deleted.";
    showError(err.status === 404 ? gone : err.message);
    return;
  }
  if (token !== loading) return;
  current = conversation.id;
  setUrl(current, push);
  const turns = conversation.turns.map((stored) => {
    const turn = new Turn(stored.question, turnOptions(false));
    turn.load(stored);
    return turn.node;
  });
  thread.replaceChildren(...turns);
  intro.hidden = turns.length > 0;
  setTitle(conversation.title);
  sidebar.setCurrent(current);
  // The latest turn, just above the question box, as in any conversation.
  if (document.activeElement === input) input.scrollIntoView({ block: "nearest" });
}

function openAt(id, push) {
  ready = openConversation(id, push);
  return ready;
}

// The answer's conversation is now the open one (the first answer starts it).
function answered(data) {
  if (data.conversation_id && data.conversation_id !== current) {
    current = data.conversation_id;
    setUrl(current, false);
  }
  sidebar.refresh().then(() => {
    sidebar.setCurrent(current);
    setTitle(sidebar.title(current));
  });
}

async function post(body, signal) {
  return fetch(urls.ask, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Accept: "text/event-stream",
      "X-CSRF-Token": csrfToken(),
    },
    body: JSON.stringify(body),
    signal: signal,
  });
}

async function ask(question, regenerate) {
  if (streaming) return;
  const controller = new AbortController();
  streaming = { controller: controller };
  showError("");
  setBusy(true);
  const turn = new Turn(question, turnOptions(true));
  turn.setStatus("Sending your question…", true);
  intro.hidden = true;
  thread.append(turn.node);
  turn.node.scrollIntoView({ block: "nearest" });
  const body = { question: question };
  if (current) body.conversation_id = current;
  if (regenerate) body.regenerate = true;
  let problem = "";
  let done = false;
  try {
    const response = await post(body, controller.signal);
    if (!response.ok) {
      problem = await failure(response); // 400, 404, 429, 503: a JSON `error`
    } else {
      await readEvents(response, (event, data) => {
        if (event === "error") {
          problem = data.error || "the assistant could not answer";
          return false;
        }
        if (done) return true;
        if (event === "status") turn.status(data);
        else if (event === "text") turn.text(data);
        else if (event === "answer") {
          done = true;
          turn.answer(data, data.turn_id);
          answered(data);
        }
        return true;
      });
      if (!done && !problem && !controller.signal.aborted) {
        problem = "The answer was interrupted; please ask again.";
      }
    }
  } catch (err) {
    if (!controller.signal.aborted) {
      problem = "The answer was interrupted (" + err.message + "); please ask again.";
    }
  }
  const lost = [document.body, stopButton, null].includes(document.activeElement);
  streaming = null;
  setBusy(false);
  if (problem) {
    // Nothing partial may look like an answer: the turn goes and the error says why.
    turn.node.remove();
    intro.hidden = thread.children.length > 0;
    if (!input.value.trim() && !regenerate) {
      input.value = question;
      updateCounter();
    }
    showError(problem);
  } else if (!done && controller.signal.aborted) {
    turn.stop();
  }
  if (lost) input.focus();
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (streaming) return;
  const question = input.value;
  input.value = "";
  updateCounter();
  await ready; // a follow-up goes into the conversation being opened
  ask(question, false);
});
input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});
function updateCounter() {
  const length = input.value.length;
  counter.textContent = length
    ? length + " / " + maxChars + " characters"
    : "Up to " + maxChars + " characters";
  counter.classList.toggle("over", length > maxChars);
}
input.addEventListener("input", updateCounter);
stopButton.addEventListener("click", stopStreaming);
newButton.addEventListener("click", () => {
  setSidebar(false);
  startNew(true, true);
});
toggle.addEventListener("click", () => setSidebar(toggle.getAttribute("aria-expanded") !== "true"));
sidebarBox.addEventListener("keydown", (event) => {
  const open = chat.classList.contains("sidebar-open");
  if (event.key === "Escape" && open && !event.defaultPrevented) {
    setSidebar(false);
    toggle.focus();
  }
});
window.addEventListener("popstate", () => {
  const id = new URLSearchParams(location.search).get("c");
  if (id) openAt(id, false);
  else startNew(false, false);
});

sidebar.refresh();
const opened = new URLSearchParams(location.search).get("c");
input.focus();
if (opened) openAt(opened, false);
