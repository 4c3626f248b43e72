// The sidebar: the signed-in user's conversations, newest first. Each opens with its link,
// is renamed in place (Enter saves, Escape cancels) and deleted after an inline confirmation.
"use strict";

import { button, el, requestJson } from "./api.js";

const MAX_TITLE = 120;

// options: { listUrl, itemUrl(id), pageUrl(id), onSelect(id), onDeleted(id), onRenamed(c) }
export class Sidebar {
  constructor(list, status, newButton, options) {
    this.list = list;
    this.statusBox = status;
    this.newButton = newButton;
    this.options = options;
    this.current = null;
    this.editing = false; // a rename form is open: a refresh waits for it
    this.pending = false;
    this.loaded = [];
  }

  say(text) {
    this.statusBox.textContent = text;
  }

  async refresh() {
    if (this.editing) {
      this.pending = true;
      return;
    }
    try {
      const data = await requestJson("GET", this.options.listUrl);
      this.render(data.conversations || []);
    } catch (err) {
      this.say("Could not list your conversations: " + err.message);
    }
  }

  render(conversations) {
    this.loaded = conversations;
    this.list.replaceChildren(...conversations.map((c) => this.item(c)));
    if (!conversations.length) this.say("No conversations yet: your first question starts one.");
    else if (this.statusBox.textContent.startsWith("No conversations")) this.say("");
  }

  title(id) {
    const found = this.loaded.find((c) => c.id === id);
    return found ? found.title : "";
  }

  setCurrent(id) {
    this.current = id;
    for (const link of this.list.querySelectorAll(".conversation-link")) {
      if (link.closest("li").dataset.id === id) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  item(conversation) {
    const item = el("li", "conversation");
    item.dataset.id = conversation.id;
    const link = el("a", "conversation-link", conversation.title);
    link.href = this.options.pageUrl(conversation.id);
    if (conversation.id === this.current) link.setAttribute("aria-current", "page");
    link.addEventListener("click", (event) => {
      if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
      event.preventDefault(); // a new tab opens it as a page; here it opens in place
      this.options.onSelect(conversation.id);
    });
    const actions = el("div", "conversation-actions");
    const rename = button("link rename", "Rename");
    rename.setAttribute("aria-label", "Rename “" + conversation.title + "”");
    rename.addEventListener("click", () => this.startRename(item, conversation));
    const remove = button("link danger delete", "Delete");
    remove.setAttribute("aria-label", "Delete “" + conversation.title + "”");
    remove.addEventListener("click", () => this.confirmDelete(item, conversation, actions));
    actions.append(rename, remove);
    item.append(link, actions);
    return item;
  }

  // -- rename, in place --------------------------------------------------------------------
  startRename(item, conversation) {
    this.editing = true;
    const form = el("form", "rename-form");
    const input = el("input", "rename-input");
    input.id = "rename-" + conversation.id;
    input.value = conversation.title;
    input.maxLength = MAX_TITLE;
    input.autocomplete = "off";
    const label = el("label", "visually-hidden", "New title for “" + conversation.title + "”");
    label.htmlFor = input.id;
    const save = el("button", "button small primary", "Save");
    save.type = "submit";
    const cancel = el("button", "button small", "Cancel");
    cancel.type = "button";
    const buttons = el("div", "rename-buttons");
    buttons.append(save, cancel);
    form.append(label, input, buttons);
    item.replaceChildren(form);
    input.focus();
    input.select();

    const finish = (shown) => {
      this.editing = false;
      const fresh = this.item(shown);
      item.replaceWith(fresh);
      fresh.querySelector(".rename").focus();
      if (this.pending) {
        this.pending = false;
        this.refresh();
      }
    };
    cancel.addEventListener("click", () => finish(conversation));
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        finish(conversation);
      }
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const title = input.value.trim();
      if (!title) {
        this.say("A title cannot be empty.");
        input.focus();
        return;
      }
      if (title === conversation.title) return finish(conversation);
      try {
        const renamed = await requestJson("PATCH", this.options.itemUrl(conversation.id), {
          title: title,
        });
        this.loaded = this.loaded.map((c) => (c.id === renamed.id ? renamed : c));
        this.say("Renamed to “" + renamed.title + "”.");
        this.options.onRenamed(renamed);
        finish(renamed);
      } catch (err) {
        this.say("Not renamed: " + err.message);
        input.focus();
      }
    });
  }

  // -- delete, after an inline confirmation ------------------------------------------------
  confirmDelete(item, conversation, actions) {
    const box = el("div", "conversation-confirm");
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", "Delete “" + conversation.title + "”?");
    const yes = el("button", "button small danger confirm-delete", "Delete");
    yes.type = "button";
    const no = el("button", "button small cancel-delete", "Cancel");
    no.type = "button";
    box.append(el("span", "small", "Delete this conversation?"), yes, no);
    actions.replaceWith(box);
    no.focus();

    const keep = () => {
      box.replaceWith(actions);
      actions.querySelector(".delete").focus();
    };
    no.addEventListener("click", keep);
    box.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        keep();
      }
    });
    yes.addEventListener("click", async () => {
      try {
        await requestJson("DELETE", this.options.itemUrl(conversation.id));
      } catch (err) {
        this.say("Not deleted: " + err.message);
        return;
      }
      const next = item.nextElementSibling || item.previousElementSibling;
      item.remove();
      this.loaded = this.loaded.filter((c) => c.id !== conversation.id);
      this.say("Deleted “" + conversation.title + "”.");
      (next ? next.querySelector(".conversation-link") : this.newButton).focus();
      this.options.onDeleted(conversation.id);
    });
  }
}
