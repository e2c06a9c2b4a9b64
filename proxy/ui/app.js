// memproxy memory inspector: a framework-free page over the memory API.
// The key is typed once and kept in sessionStorage (this tab, until it closes); it travels only in
// the Authorization header, never in a URL. Every text from the API is set as text, never as HTML.
"use strict";

const KEY = "memproxy.key";
const PAGE = 50;
const main = document.getElementById("main");
const statusLine = document.getElementById("status");

// -- small helpers ---------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function say(message) {
  statusLine.textContent = message;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { statusLine.textContent = ""; }, 4000);
}

function when(iso) {
  if (!iso) return "—";
  const moment = new Date(iso);
  return isNaN(moment) ? iso : moment.toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function score(value) {
  return value === null || value === undefined ? "—" : value.toFixed(4);
}

function stateBadge(state) {
  return h("span", { class: `state state-${state}` }, state);
}

function spaceHref(space, tab) {
  return `#/space/${encodeURIComponent(space)}${tab ? "/" + tab : ""}`;
}

function memoryHref(id) {
  return `#/memory/${encodeURIComponent(id)}`;
}

function navigate(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

function cell(label, content, cls) {
  return h("td", { "data-label": label, class: cls }, content);
}

// -- the API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, { json, body, query } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    for (const item of [].concat(value)) {
      if (item !== undefined && item !== null && item !== "") url.searchParams.append(name, item);
    }
  }
  const headers = { authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}` };
  if (json !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(url, {
    method, headers, body: json !== undefined ? JSON.stringify(json) : body, cache: "no-store",
  });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message || message; } catch (_) { /* not JSON */ }
    if (response.status === 401) sessionStorage.removeItem(KEY);
    throw new ApiError(response.status, message);
  }
  return response;
}

async function apiJson(method, path, options) {
  return (await api(method, path, options)).json();
}

// -- confirmation ----------------------------------------------------------------------------

function confirmAction({ title, text, action, typed }) {
  const dialog = document.getElementById("confirm");
  const input = document.getElementById("confirm-input");
  const ok = document.getElementById("confirm-ok");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-typed").hidden = !typed;
  document.getElementById("confirm-word").textContent = typed || "";
  ok.textContent = action;
  input.value = "";
  ok.disabled = Boolean(typed);
  input.oninput = () => { ok.disabled = input.value !== typed; };
  dialog.returnValue = "";
  dialog.showModal();
  (typed ? input : ok).focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

// -- views -----------------------------------------------------------------------------------

function show(...nodes) {
  main.replaceChildren(...nodes);
  main.focus({ preventScroll: true });
}

function loginView(reason) {
  const input = h("input", { id: "key", type: "password", autocomplete: "current-password", required: true });
  const problem = h("p", { class: "error", role: "alert" }, reason || "");
  const form = h("form", { class: "panel login", onsubmit: async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, input.value);
    try {
      await api("GET", "/v1/spaces", { query: { limit: 1 } });
      navigate("#/spaces");
    } catch (error) {
      sessionStorage.removeItem(KEY);
      problem.textContent = error.status === 401 ? "That key was not accepted." : error.message;
    }
  } },
  h("h1", {}, "Log in"),
  h("p", { class: "muted" }, "Enter the proxy's master key or a key with memory read rights. "
    + "It is kept only for this browser tab's session."),
  h("label", { for: "key" }, "API key", input), problem,
  h("div", { class: "actions" }, h("button", { class: "primary", type: "submit" }, "Log in")));
  show(form);
  input.focus();
}

function pager(cursors, nextCursor, go) {
  return h("div", { class: "pager" },
    h("button", { type: "button", disabled: cursors.length === 0, onclick: () => go(cursors.slice(0, -1)) }, "Previous page"),
    h("span", { class: "muted" }, `Page ${cursors.length + 1}`),
    h("button", { type: "button", disabled: !nextCursor, onclick: () => go([...cursors, nextCursor]) }, "Next page"));
}

function importForm(space) {
  const file = h("input", { type: "file", id: "import-file", accept: ".memcube,.zip,.json", required: true });
  const target = h("input", { id: "import-space", value: space || "", placeholder: "as in the bundle" });
  const conflict = h("select", { id: "import-conflict" },
    ["skip", "overwrite", "new-ids"].map((value) => h("option", { value }, value)));
  return h("form", { class: "inline panel", "aria-label": "Import a bundle", onsubmit: async (event) => {
    event.preventDefault();
    const report = await apiJson("POST", "/v1/spaces/import", {
      body: file.files[0], query: { space: target.value.trim(), on_conflict: conflict.value },
    });
    say(`Imported ${report.imported} memories into ${report.space} (${report.skipped} skipped)`);
    navigate(spaceHref(report.space));
  } },
  h("label", { for: "import-file" }, "Import a bundle", file),
  h("label", { for: "import-space" }, "Into space", target),
  h("label", { for: "import-conflict" }, "On conflict", conflict),
  h("button", { type: "submit" }, "Import"));
}

async function spacesView(params) {
  const cursors = params.getAll("after");
  const filter = params.get("q") || "";
  const page = await apiJson("GET", "/v1/spaces", { query: { q: filter, cursor: cursors.at(-1), limit: PAGE } });
  const go = (next, q = filter) => {
    const search = new URLSearchParams();
    if (q) search.set("q", q);
    next.forEach((cursor) => search.append("after", cursor));
    location.hash = `#/spaces?${search}`;
  };
  const input = h("input", { id: "space-filter", type: "search", value: filter, placeholder: "user:alice" });
  const rows = page.data.map((space) => {
    const others = Object.entries(space.memories).filter(([state]) => state !== "active")
      .map(([state, count]) => `${count} ${state}`).join(", ");
    return h("tr", {},
      cell("Space", h("a", { href: spaceHref(space.space) }, space.space), "text"),
      cell("Active", space.memories.active || 0, "num"),
      cell("Other states", others || "—"),
      cell("Last activity", when(space.last_activity)),
      cell("Storage", `${space.bytes_estimated ? "≈ " : ""}${size(space.bytes)}`, "num"));
  });
  show(
    h("h1", {}, "Spaces"),
    h("form", { class: "filters", role: "search", onsubmit: (event) => { event.preventDefault(); go([], input.value.trim()); } },
      h("label", { for: "space-filter" }, "Filter by name", input), h("button", { type: "submit" }, "Filter")),
    rows.length ? h("table", { class: "cards", id: "spaces" },
      h("thead", {}, h("tr", {}, h("th", {}, "Space"), h("th", { class: "num" }, "Active"), h("th", {}, "Other states"),
        h("th", {}, "Last activity"), h("th", { class: "num" }, "Storage"))),
      h("tbody", {}, rows)) : h("p", { class: "muted" }, filter ? "No space matches." : "No memories yet."),
    pager(cursors, page.next_cursor, go),
    importForm(""));
}

async function spaceHeader(space, tab) {
  const stats = await apiJson("GET", `/v1/spaces/${encodeURIComponent(space)}`);
  const counts = Object.entries(stats.memories).map(([state, count]) => `${count} ${state}`).join(" · ");
  const exportButton = h("button", { type: "button", id: "export", onclick: () => exportSpace(space) }, "Export bundle");
  const forget = h("button", { type: "button", class: "danger", id: "forget", onclick: async () => {
    const ok = await confirmAction({
      title: `Forget ${space}?`,
      text: "Every memory of this space, its history and its vectors are deleted for good. Nothing else is touched.",
      action: "Forget", typed: space,
    });
    if (!ok) return;
    await api("DELETE", `/v1/spaces/${encodeURIComponent(space)}`);
    say(`Forgot ${space}`);
    navigate("#/spaces");
  } }, "Forget this space");
  const link = (name, label) => h("a", { href: spaceHref(space, name), "aria-current": tab === name ? "page" : null }, label);
  return [stats, [
    h("p", { class: "crumbs" }, h("a", { href: "#/spaces" }, "Spaces"), " / "),
    h("h1", {}, space),
    h("p", { class: "muted", id: "space-summary" },
      `${counts || "no memories"} · last activity ${when(stats.last_activity)} · `
      + `${stats.bytes_estimated ? "≈ " : ""}${size(stats.bytes)}`),
    h("div", { class: "actions" }, exportButton, forget),
    h("nav", { class: "tabs", "aria-label": "Space" }, link("", "Memories"), link("inject", "What will be injected")),
  ]];
}

async function exportSpace(space) {
  const response = await api("GET", `/v1/spaces/${encodeURIComponent(space)}/export`);
  const name = (response.headers.get("content-disposition") || "").match(/filename="([^"]+)"/);
  const url = URL.createObjectURL(await response.blob());
  const link = h("a", { href: url, download: name ? name[1] : "space.memcube" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  say(`Exported ${space}`);
}

async function spaceView(space, params) {
  const [stats, header] = await spaceHeader(space, "");
  const known = Object.keys(stats.memories);
  const state = params.get("state") || "active";
  const cursors = params.getAll("after");
  const fields = {
    tag: params.get("tag") || "", since: params.get("since") || "", until: params.get("until") || "",
    q: params.get("q") || "", order: params.get("order") || "newest",
  };
  const page = await apiJson("GET", "/v1/memories", { query: {
    space, state: state === "all" ? (known.length ? known : ["active"]) : state, tag: fields.tag,
    since: fields.since && `${fields.since}T00:00:00Z`, until: fields.until && `${fields.until}T23:59:59Z`,
    q: fields.q, order: fields.order, cursor: cursors.at(-1), limit: PAGE,
  } });
  const go = (next, values = { state, ...fields }) => {
    const search = new URLSearchParams(Object.entries(values).filter(([, value]) => value));
    next.forEach((cursor) => search.append("after", cursor));
    location.hash = `${spaceHref(space)}?${search}`;
  };
  const states = [...new Set(["active", ...known, state])].filter((s) => s !== "all");
  const inputs = {
    state: h("select", { id: "f-state" }, [...states, "all"].map((s) => h("option", { value: s, selected: s === state }, s === "all" ? "all states" : s))),
    q: h("input", { id: "f-q", type: "search", value: fields.q, placeholder: "contains…" }),
    tag: h("input", { id: "f-tag", value: fields.tag }),
    since: h("input", { id: "f-since", type: "date", value: fields.since }),
    until: h("input", { id: "f-until", type: "date", value: fields.until }),
    order: h("select", { id: "f-order" }, ["newest", "oldest"].map((o) => h("option", { value: o, selected: o === fields.order }, `${o} first`))),
  };
  const filters = h("form", { class: "filters", role: "search", "aria-label": "Filter memories", onsubmit: (event) => {
    event.preventDefault();
    go([], Object.fromEntries(Object.entries(inputs).map(([name, input]) => [name, input.value.trim()])));
  } },
  h("label", { for: "f-q" }, "Text", inputs.q), h("label", { for: "f-state" }, "State", inputs.state),
  h("label", { for: "f-tag" }, "Tag", inputs.tag), h("label", { for: "f-since" }, "Created from", inputs.since),
  h("label", { for: "f-until" }, "Created until", inputs.until), h("label", { for: "f-order" }, "Sort", inputs.order),
  h("button", { type: "submit" }, "Apply"));
  const rows = page.data.map((cube) => h("tr", { "data-id": cube.id },
    cell("Memory", h("a", { href: memoryHref(cube.id) }, cube.content), "text"),
    cell("State", stateBadge(cube.state)),
    cell("Version", cube.version, "num"),
    cell("Valid", cube.valid_from || cube.valid_to ? `${when(cube.valid_from)} → ${when(cube.valid_to)}` : "—"),
    cell("Heat", cube.access.heat.toFixed(2), "num"),
    cell("Pinned", cube.pinned ? "pinned" : "—"),
    cell("Sources", cube.sources.length, "num"),
    cell("Created", when(cube.created_at)),
    cell("Updated", when(cube.updated_at))));
  show(...header, filters,
    rows.length ? h("table", { class: "cards", id: "memories" },
      h("thead", {}, h("tr", {}, ["Memory", "State", "Version", "Valid", "Heat", "Pinned", "Sources", "Created", "Updated"]
        .map((name) => h("th", { class: ["Version", "Heat", "Sources"].includes(name) ? "num" : null }, name)))),
      h("tbody", {}, rows)) : h("p", { class: "muted" }, "No memory matches."),
    pager(cursors, page.next_cursor, (next) => go(next)),
    importForm(space));
}

function playground(space) {
  const query = h("input", { id: "p-query", type: "search", required: true, placeholder: "Ask what the user might ask…" });
  const topK = h("input", { id: "p-topk", type: "number", min: 1, max: 200, placeholder: "default" });
  const budget = h("input", { id: "p-budget", type: "number", min: 0, max: 1000000, placeholder: "default" });
  const out = h("div", { id: "p-result" });
  const form = h("form", { class: "filters", role: "search", "aria-label": "Search playground", onsubmit: async (event) => {
    event.preventDefault();
    const body = { space, query: query.value, explain: true };
    if (topK.value) body.top_k = Number(topK.value);
    if (budget.value) body.token_budget = Number(budget.value);
    const found = await apiJson("POST", "/v1/memories/search", { json: body });
    const rows = found.candidates.map((item, rank) => h("tr", { class: item.injected ? "injected" : null },
      cell("Rank", rank + 1, "num"),
      cell("Memory", h("a", { href: memoryHref(item.id) }, item.content), "text"),
      cell("Dense", score(item.dense), "num"), cell("Lexical", score(item.lexical), "num"),
      cell("Fused", score(item.fused), "num"), cell("Injected", item.injected ? "yes" : "no")));
    out.replaceChildren(
      h("p", { id: "p-summary" }, `${found.results.length} memories injected, ${found.tokens} tokens; `
        + `${found.candidates.length} candidates ranked.`),
      h("table", { class: "cards", id: "candidates" },
        h("thead", {}, h("tr", {}, ["Rank", "Memory", "Dense", "Lexical", "Fused", "Injected"]
          .map((name) => h("th", { class: ["Rank", "Dense", "Lexical", "Fused"].includes(name) ? "num" : null }, name)))),
        h("tbody", {}, rows)),
      h("h3", {}, "Injected into the system prompt (stable block)"),
      h("pre", { class: "block", id: "p-stable" }, found.injected.stable || "(none)"),
      h("h3", {}, "Prepended to the last user message"),
      h("pre", { class: "block", id: "p-volatile" }, found.injected.volatile || "(none)"));
  } },
  h("label", { for: "p-query" }, "Question", query), h("label", { for: "p-topk" }, "top_k", topK),
  h("label", { for: "p-budget" }, "Token budget", budget), h("button", { type: "submit", class: "primary" }, "Search"));
  return [h("h2", {}, "Search playground"),
    h("p", { class: "muted" }, "Ranked memories with their dense, lexical and fused scores; those that fit the budget are injected."),
    form, out];
}

async function injectView(space) {
  const [, header] = await spaceHeader(space, "inject");
  const stable = await apiJson("GET", `/v1/spaces/${encodeURIComponent(space)}/stable`);
  show(...header,
    h("h2", {}, "Stable block of the next request"),
    h("p", { id: "stable-tokens" }, `${stable.items.length} memories, ${stable.tokens} tokens of memories `
      + `(${stable.message_tokens} tokens with its heading)`),
    stable.messages.length ? h("div", { id: "stable-block" }, stable.messages.map((message) => [
      h("h3", {}, `Inserted as a ${message.role} message`), h("pre", { class: "block" }, message.content)]))
      : h("pre", { class: "block", id: "stable-block" },
        "(empty: the next request gets no stable block; pin a memory or let one grow hot)"),
    ...playground(space));
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]));
}

async function memoryView(id) {
  const cube = await apiJson("GET", `/v1/memories/${encodeURIComponent(id)}`);
  const [history, messages] = await Promise.all(["history", "sources"].map(
    async (part) => (await apiJson("GET", `/v1/memories/${encodeURIComponent(id)}/${part}`)).data));
  const related = Object.fromEntries(await Promise.all([cube.supersedes, cube.superseded_by].filter(Boolean).map(
    async (otherId) => [otherId, await apiJson("GET", `/v1/memories/${encodeURIComponent(otherId)}`).catch(() => null)])));
  const path = `/v1/memories/${encodeURIComponent(id)}`;
  const reload = (message) => { say(message); render(); };
  const live = cube.state === "active";
  const content = h("textarea", { id: "edit-content", required: true }, cube.content);
  const tags = h("input", { id: "edit-tags", value: cube.tags.join(", ") });
  const edit = h("form", { class: "panel", id: "edit", hidden: true, "aria-label": "Edit memory", onsubmit: async (event) => {
    event.preventDefault();
    const changes = { content: content.value, tags: tags.value.split(",").map((t) => t.trim()).filter(Boolean) };
    await apiJson("PATCH", path, { json: changes });
    reload("Saved as a new version");
  } },
  h("label", { for: "edit-content" }, "Content", content), h("label", { for: "edit-tags" }, "Tags (comma-separated)", tags),
  h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Save"),
    h("button", { type: "button", onclick: () => { edit.hidden = true; } }, "Cancel")));
  const button = (label, onclick, attrs = {}) => h("button", { type: "button", onclick, ...attrs }, label);
  const actions = h("div", { class: "actions" },
    live && button("Edit", () => { edit.hidden = false; content.focus(); }, { id: "do-edit" }),
    live && button(cube.pinned ? "Unpin" : "Pin", async () => {
      await apiJson("PATCH", path, { json: { pinned: !cube.pinned } });
      reload(cube.pinned ? "Unpinned" : "Pinned: it joins the stable block");
    }, { id: "do-pin" }),
    cube.state === "quarantined" && button("Approve", async () => {
      await apiJson("POST", `${path}/approve`);
      reload("Approved: it can be retrieved now");
    }, { id: "do-approve", class: "primary" }),
    cube.state !== "deleted" && button("Delete", async () => {
      if (!await confirmAction({ title: "Delete this memory?", text: "It is never retrieved again; its history is kept.", action: "Delete" })) return;
      await apiJson("DELETE", path);
      reload("Deleted");
    }, { id: "do-delete" }),
    button("Purge", async () => {
      if (!await confirmAction({ title: "Purge this memory?", text: "It is removed everywhere, history included. This cannot be undone.", action: "Purge" })) return;
      await apiJson("DELETE", path, { query: { purge: "true" } });
      say("Purged");
      navigate(spaceHref(cube.space));
    }, { id: "do-purge", class: "danger" }));
  const relation = (otherId) => related[otherId]
    ? [h("a", { href: memoryHref(otherId) }, related[otherId].content), " ", stateBadge(related[otherId].state)]
    : [otherId, " (purged)"];
  const source = cube.source || {};
  const extra = Object.entries(cube.meta || {}).map(([name, value]) => [`meta.${name}`, typeof value === "string" ? value : JSON.stringify(value)]);
  show(
    h("p", { class: "crumbs" }, h("a", { href: "#/spaces" }, "Spaces"), " / ", h("a", { href: spaceHref(cube.space) }, cube.space), " /"),
    h("h1", {}, "Memory ", stateBadge(cube.state)),
    h("p", { class: "content", id: "memory-content" }, cube.content),
    actions, edit,
    h("section", { class: "panel", "aria-label": "Details" }, facts([
      ["Id", cube.id], ["Version", cube.version],
      ["Valid", `${when(cube.valid_from)} → ${when(cube.valid_to)}`],
      ["Heat", `${cube.access.heat.toFixed(2)} (${cube.access.hits} hits, last ${when(cube.access.last_hit_at)})`],
      ["Pinned", cube.pinned ? "yes" : "no"], ["Stable block since", when(cube.access.stable_since)],
      ["Tags", cube.tags.join(", ") || "—"], ["Created", when(cube.created_at)], ["Updated", when(cube.updated_at)],
      cube.expires_at && ["Expires", when(cube.expires_at)],
      cube.supersedes && ["Supersedes", h("span", { id: "rel-supersedes", "data-id": cube.supersedes }, relation(cube.supersedes))],
      cube.superseded_by && ["Superseded by", h("span", { id: "rel-superseded-by", "data-id": cube.superseded_by }, relation(cube.superseded_by))],
      ["Sources", h("span", { id: "sources" }, cube.sources.join(", ") || "—")],
      source.exchange_id && ["Exchange", source.exchange_id],
      source.reader && ["Distilled by", `${source.reader}${source.model ? " (" + source.model + ")" : ""}`],
      source.names && source.names.length && ["Speakers", source.names.join(", ")],
      ...extra,
    ])),
    h("h2", {}, "Source messages"),
    messages.length ? h("ol", { class: "history", id: "source-messages" }, messages.map((message) => h("li", {},
      h("b", {}, message.name || message.role), ` · ${when(message.created_at)} · ${message.id}`,
      h("div", { class: "content-small" }, message.content))))
      : h("p", { class: "muted" }, "Not journalled here (an imported memory, or stated as a fact)."),
    h("h2", {}, "History"),
    h("ol", { class: "history", id: "history" }, history.map((entry) => h("li", {},
      h("b", {}, entry.event), ` v${entry.memory.version} · ${when(entry.at)}`, entry.reason ? ` · ${entry.reason}` : "",
      " · ", stateBadge(entry.memory.state), h("div", { class: "muted" }, entry.memory.content)))));
}

// -- routing ---------------------------------------------------------------------------------

async function render() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  document.getElementById("logout").hidden = !sessionStorage.getItem(KEY);
  if (parts[0] === "login" || !sessionStorage.getItem(KEY)) return loginView();
  try {
    if (parts[0] === "space" && parts[1] && parts[2] === "inject") await injectView(parts[1]);
    else if (parts[0] === "space" && parts[1]) await spaceView(parts[1], params);
    else if (parts[0] === "memory" && parts[1]) await memoryView(parts[1]);
    else await spacesView(params);
    document.title = `${main.querySelector("h1")?.textContent || "Inspector"} · memproxy`;
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (error.status === 401) return loginView("The key was refused; log in again.");
    show(h("h1", {}, error.status === 404 ? "Not found" : "Something went wrong"),
      h("p", { class: "error", role: "alert", id: "problem" }, error.message),
      h("p", {}, h("a", { href: "#/spaces" }, "Back to the spaces")));
  }
}

// An action's failure (a 400, a refused key) is shown, not swallowed.
window.addEventListener("unhandledrejection", (event) => {
  if (event.reason instanceof ApiError) {
    event.preventDefault();
    say(event.reason.message);
    if (event.reason.status === 401) loginView("The key was refused; log in again.");
  }
});
document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  location.hash = "#/login";
});
window.addEventListener("hashchange", render);
render();
