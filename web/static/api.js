// JSON requests to the assistant's own API, with the session's CSRF token on every change,
// and the small DOM helper the Ask page's modules share.
"use strict";

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text; // text only: server text is never HTML
  return node;
}

// A small button that is not a form's submit button.
export function button(className, text) {
  const node = el("button", "button small " + className, text);
  node.type = "button";
  return node;
}

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// The `error` of a JSON error body (429, 503, 400, 404 ...), or a plain description.
export async function failure(response) {
  let message = "The request failed (" + response.status + ").";
  try {
    const body = await response.json();
    if (body && typeof body.error === "string" && body.error) message = body.error;
  } catch (err) {
    /* not JSON: keep the plain description */
  }
  return message;
}

export async function requestJson(method, url, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken();
  const options = { method: method, headers: headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    throw new ApiError("Could not reach the assistant: " + err.message, 0);
  }
  if (!response.ok) throw new ApiError(await failure(response), response.status);
  if (response.status === 204) return null;
  return response.json();
}

// Parse "event: x\ndata: {...}\n\n" blocks from a streamed body; `handle` returning false
// stops reading (and cancels the body, which frees the server's slot).
export async function readEvents(response, handle) {
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
        await reader.cancel();
        return;
      }
    }
    if (done) return;
  }
}
