// PartnerGate console: the little script behind the server-rendered pages.
// It keeps the bearer token in this tab's sessionStorage (never in a URL or
// a cookie) and sends it only as an Authorization header; it loads page data
// that needs the token, keeps the Policies page live, submits Try, runs tests
// and proofs, and suggests stored uids. Everything it inserts as HTML was
// rendered (and escaped) by the sidecar; text from JSON goes in as text.
"use strict";

const TOKEN_KEY = "partnergate-token";

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function authFetch(url, options) {
  const opts = Object.assign({ headers: {} }, options || {});
  const t = token();
  if (t) {
    opts.headers["Authorization"] = "Bearer " + t;
  }
  return fetch(url, opts);
}

// Put a response into `el`: HTML from the console, or the message of a JSON
// error (401 without the token, 413, ...) as text.
async function show(el, resp) {
  const type = resp.headers.get("content-type") || "";
  if (type.startsWith("application/json")) {
    const body = await resp.json().catch(() => ({}));
    const div = document.createElement("div");
    div.className = "error";
    div.textContent = (body.message || body.error || resp.statusText) +
      (resp.status === 401 ? " (enter the token above)" : "");
    el.replaceChildren(div);
    return;
  }
  el.innerHTML = await resp.text();
  bind(el);
}

async function load(el, src) {
  try {
    await show(el, await authFetch(src));
  } catch (e) {
    const div = document.createElement("div");
    div.className = "error";
    div.textContent = "cannot reach the sidecar: " + e;
    el.replaceChildren(div);
  }
}

// Wire the elements of `root` that load or post on demand.
function bind(root) {
  root.querySelectorAll(".fragment[data-src]:not([data-loaded])").forEach((el) => {
    el.setAttribute("data-loaded", "1");
    if (token() || document.body.dataset.protectQueries !== "true") {
      load(el, el.dataset.src);
    }
  });
  root.querySelectorAll(".histogram[data-src]:not([data-bound])").forEach((el) => {
    el.setAttribute("data-bound", "1");
    load(el, el.dataset.src);
  });
  root.querySelectorAll(".verify[data-src], .activity[data-src]").forEach((el) => {
    const button = el.querySelector("button.load");
    if (!button || button.dataset.bound) {
      return;
    }
    button.dataset.bound = "1";
    button.addEventListener("click", () => {
      button.disabled = true;
      button.textContent = "Loading…";
      load(el, el.dataset.src);
    });
  });
  root.querySelectorAll("button[data-copy]:not([data-bound])").forEach((button) => {
    button.setAttribute("data-bound", "1");
    button.addEventListener("click", async () => {
      const text = document.getElementById(button.dataset.copy).textContent;
      try {
        await navigator.clipboard.writeText(text);
        button.textContent = "Copied";
      } catch (e) {
        // No clipboard (an insecure origin): select the text to copy by hand.
        const range = document.createRange();
        range.selectNodeContents(document.getElementById(button.dataset.copy));
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        button.textContent = "Selected: press Ctrl+C";
      }
    });
  });
  root.querySelectorAll("form.run:not([data-bound])").forEach((form) => {
    form.setAttribute("data-bound", "1");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const target = document.getElementById(form.dataset.target);
      const button = form.querySelector("button");
      button.disabled = true;
      target.textContent = "Running…";
      try {
        await show(target, await authFetch(form.dataset.post, { method: "POST" }));
      } finally {
        button.disabled = false;
      }
    });
  });
}

function setupToken() {
  const form = document.getElementById("token-form");
  const input = document.getElementById("token");
  const state = document.getElementById("token-state");
  const refresh = () => {
    state.textContent = token() ? "token set for this tab" : "no token";
  };
  refresh();
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (input.value.trim()) {
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    } else {
      sessionStorage.removeItem(TOKEN_KEY);
    }
    input.value = "";
    refresh();
    // Data that waited for the token loads now.
    document.querySelectorAll(".fragment[data-src]").forEach((el) => load(el, el.dataset.src));
  });
}

// Policies: poll the reload state every second; reload the data on change.
function setupLive() {
  const live = document.getElementById("policies-live");
  if (!live) {
    return;
  }
  let last = null;
  const tick = async () => {
    try {
      const resp = await authFetch(live.dataset.state);
      if (resp.ok) {
        const s = await resp.json();
        const key = s.version + "/" + s.successes + "/" + s.failures;
        if (last !== null && key !== last) {
          const frag = live.querySelector(".fragment") || live;
          await load(frag, live.dataset.src);
        }
        last = key;
      }
    } catch (e) {
      // The sidecar is restarting: try again at the next tick.
    }
    setTimeout(tick, 1000);
  };
  tick();
}

function setupTry() {
  const form = document.getElementById("try-form");
  if (!form) {
    return;
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {};
    ["principal", "action", "resource", "context", "entities"].forEach((k) => {
      body[k] = form.elements[k].value;
    });
    const result = document.getElementById("try-result");
    result.textContent = "Deciding…";
    await show(result, await authFetch("/console/f/try", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    }));
  });
  form.querySelectorAll("input[data-suggest]").forEach((input) => {
    let timer = null;
    input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const resp = await authFetch("/console/f/uids?q=" + encodeURIComponent(input.value));
        if (!resp.ok) {
          return;
        }
        const list = document.getElementById(input.dataset.suggest);
        const options = (await resp.json()).map((uid) => {
          const o = document.createElement("option");
          o.value = uid;
          return o;
        });
        list.replaceChildren(...options);
      }, 150);
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupToken();
  bind(document);
  setupLive();
  setupTry();
});
