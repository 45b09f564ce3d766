// The Customer Consents page. It talks only to the /v1 API, with the token the user signs in with
// (kept in sessionStorage: this tab only). Everything shown is set as text, never as HTML.
"use strict";

const TOKEN_KEY = "consentd.token";
const USAGES = { call_recording: "Call recording", whatsapp: "WhatsApp" };
const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone;
const TIME = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

// The rights, in words, as the header shows them.
const RIGHT_WORDS = {
  view: "see consents",
  create: "add",
  modify: "change",
  delete: "delete",
  manage: "import, export and sync",
  dpo: "answer data protection requests",
};

const state = {
  token: null,
  me: null,
  criteria: null, // the current search, as API parameters
  cursors: [], // the cursor of each page shown so far ("" for the first)
  next: null,
  items: [],
  selected: new Set(),
  mappingsLoaded: false,
  mappings: [],
  failed: false, // the last search was refused: no results shown
  changed: new Set(), // ids of rows changed since the search, kept in place
  total: null, // how many consents the search matches
  sort: { key: "created_at", desc: false }, // the order of the results: a column, ascending or not
  allMatching: false, // the selection stands for every consent the search matches
};

const $ = (id) => document.getElementById(id);

// ----- Small DOM helpers: text only -----

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v === true) e.setAttribute(k, "");
    else e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function show(node, visible) {
  node.hidden = !visible;
}

function say(node, text, bad) {
  node.textContent = text || "";
  node.classList.toggle("bad", !!bad);
}

function formatTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? iso : TIME.format(d);
}

function plural(n, one, many) {
  return `${n.toLocaleString()} ${n === 1 ? one : many || one + "s"}`;
}

// ----- The API -----

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `the server answered ${status}`);
    this.status = status;
    this.code = body && body.error;
    this.field = body && body.field;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { message: "the daemon cannot be reached" });
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (e) {
    data = { message: text };
  }
  if (!res.ok) {
    const err = new ApiError(res.status, data);
    if (res.status === 401 && state.me) signOut("Your token is no longer accepted; sign in again.");
    throw err;
  }
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

function can(right) {
  return !!state.me && state.me.rights.includes(right);
}

// ----- Sign in -----

async function signIn(token, quiet) {
  state.token = token;
  try {
    state.me = await api("GET", "/v1/me");
  } catch (e) {
    state.token = null;
    state.me = null;
    sessionStorage.removeItem(TOKEN_KEY);
    if (!quiet) say($("signin-error"), e.status === 401 ? "This token is not known to the daemon." : e.message, true);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  say($("signin-error"), "");
  $("who-name").textContent = state.me.name;
  const words = state.me.rights.map((r) => RIGHT_WORDS[r] || r);
  $("who-rights").textContent = words.length ? `(may ${words.join(", ")})` : "(no rights)";
  $("who-rights").title = `Rights: ${state.me.rights.join(", ") || "none"}`;
  show($("signin"), false);
  show($("who"), true);
  show($("app"), true);
  applyRights();
  // A DPO starts where their work is.
  selectTab(can("dpo") ? "dpo" : can("view") ? "consents" : can("manage") ? "transfer" : "consents");
  if (can("view")) {
    loadSaved();
    $("f-number").focus();
  }
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.me = null;
  state.criteria = null;
  state.failed = false;
  state.items = [];
  state.selected.clear();
  state.mappingsLoaded = false;
  renderResults();
  // Nothing of the last user's work stays on the page: numbers may be in any of it.
  fillForm({});
  for (const id of ["action-status", "search-error", "dpo-status", "dpo-error", "export-status", "sync-error", "dead-status"]) say($(id), "");
  for (const id of ["saved-list", "dpo-report", "dead-letters"]) $(id).replaceChildren();
  $("sync-table").querySelector("tbody").replaceChildren();
  show($("dead-panel"), false);
  show($("import-progress"), false);
  $("dpo-number").value = "";
  $("import-file").value = "";
  $("import-report").replaceChildren(el("p", { class: "muted", text: "No import yet." }));
  show($("app"), false);
  show($("who"), false);
  show($("signin"), true);
  say($("signin-error"), message || "", !!message);
  $("token").focus();
}

// Hides what the token may not do.
function applyRights() {
  for (const node of document.querySelectorAll("[data-right]")) show(node, can(node.dataset.right));
  show($("no-view"), !can("view"));
  updateSelection();
}

// ----- Tabs -----

const TABS = ["consents", "transfer", "sync", "check", "dpo"];

function selectTab(name) {
  for (const t of TABS) {
    const selected = t === name;
    const tab = $(`tab-${t}`);
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    show($(`panel-${t}`), selected);
  }
  if (name === "transfer") {
    loadMappings();
    describeExport();
  }
  if (name === "sync") loadSync();
}

function visibleTabs() {
  return TABS.filter((t) => !$(`tab-${t}`).hidden);
}

function onTabKey(e) {
  const tabs = visibleTabs();
  const i = tabs.indexOf(e.target.id.slice(4));
  let j = null;
  if (e.key === "ArrowRight") j = (i + 1) % tabs.length;
  if (e.key === "ArrowLeft") j = (i - 1 + tabs.length) % tabs.length;
  if (e.key === "Home") j = 0;
  if (e.key === "End") j = tabs.length - 1;
  if (j === null) return;
  e.preventDefault();
  selectTab(tabs[j]);
  $(`tab-${tabs[j]}`).focus();
}

// ----- Search -----

// A Creation Time bound from its date and optional time-of-day fields, in the browser's zone:
// `{ value }` (an RFC 3339 instant in UTC; none when both are empty) or `{ error }` for a field that is
// half typed. A date alone covers its whole day; an upper bound covers its whole second or minute.
function bound(id, upper) {
  const date = $(id);
  const time = $(`${id}-time`);
  if (date.validity.badInput) return { error: "the date is not complete: give day, month and year" };
  if (time.validity.badInput) return { error: "the time of day is not complete" };
  if (!date.value) return time.value ? { error: "a time of day needs a date" } : {};
  const [y, m, d] = date.value.split("-").map(Number);
  let at;
  if (time.value) {
    const [hh, mm, ss] = time.value.split(":").map(Number);
    at = new Date(y, m - 1, d, hh, mm, ss || 0, 0);
    if (upper) at.setSeconds(ss === undefined ? 59 : ss, 999);
  } else {
    at = upper ? new Date(y, m - 1, d, 23, 59, 59, 999) : new Date(y, m - 1, d);
  }
  return isNaN(at) ? { error: "not a date" } : { value: at.toISOString() };
}

const pad2 = (n) => String(n).padStart(2, "0");
const localDate = (d) => `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;

// Fills a bound's date and time-of-day fields from an instant (or a date); a whole day leaves the
// time empty.
function fillBound(id, iso, upper) {
  const d = iso ? new Date(/^\d{4}-\d{2}-\d{2}$/.test(iso) ? `${iso}T00:00:00Z` : iso) : null;
  if (!d || isNaN(d)) {
    $(id).value = "";
    $(`${id}-time`).value = "";
    return;
  }
  const hms = [d.getHours(), d.getMinutes(), d.getSeconds(), d.getMilliseconds()];
  const wholeDay = upper ? hms.join() === "23,59,59,999" : hms.join() === "0,0,0,0";
  $(id).value = localDate(d);
  $(`${id}-time`).value = wholeDay ? "" : `${pad2(hms[0])}:${pad2(hms[1])}:${pad2(hms[2])}`;
}

// The quick ranges: dates only, ending today.
function quickRange(which) {
  const today = new Date();
  const from = new Date(today);
  if (which === "week") from.setDate(today.getDate() - 6);
  if (which === "month") from.setDate(1);
  if (!which) return;
  $("f-from").value = localDate(from);
  $("f-to").value = localDate(today);
  $("f-from-time").value = "";
  $("f-to-time").value = "";
}

// The number field: a full number when it starts with + or with 0 and is long enough for one (a
// national number, read with the daemon's default country code); else the number's last digits.
function numberCriterion(text) {
  const t = text.trim();
  if (!t) return {};
  const digits = t.replace(/\D/g, "");
  return t.startsWith("+") || (t.startsWith("0") && digits.length >= 8) ? { number: t } : { digits: t };
}

// The form's criteria, or null when a field is half typed: then each such field says why next to
// it, and nothing is searched (a criterion left out would widen the search without saying so).
function formCriteria() {
  const from = bound("f-from", false);
  const to = bound("f-to", true);
  let bad = null;
  for (const [id, b] of [["f-from", from], ["f-to", to]]) {
    say($(`${id}-error`), b.error || "", true);
    $(id).setAttribute("aria-invalid", b.error ? "true" : "false");
    if (b.error && !bad) bad = [id, b.error];
  }
  if (bad) {
    say($("search-error"), `${FIELD_LABELS[bad[0] === "f-from" ? "created_from" : "created_to"]}: ${bad[1]}.`, true);
    $(bad[0]).focus();
    return null;
  }
  const c = {
    ...numberCriterion($("f-number").value),
    consent: $("f-consent").value || undefined,
    usage: $("f-usage").value || undefined,
    created_from: from.value,
    created_to: to.value,
  };
  for (const k of Object.keys(c)) if (c[k] === undefined) delete c[k];
  return c;
}

function fillForm(c) {
  $("f-number").value = c.number || c.digits || "";
  $("f-consent").value = c.consent || "";
  $("f-usage").value = c.usage || "";
  $("f-range").value = "";
  fillBound("f-from", c.created_from, false);
  fillBound("f-to", c.created_to, true);
  for (const id of ["f-from", "f-to"]) {
    say($(`${id}-error`), "");
    $(id).setAttribute("aria-invalid", "false");
  }
}

// Which form field an API error is about, for the message.
const FIELD_LABELS = {
  number: "Number",
  digits: "Number",
  consent: "Consent",
  usage: "Usage",
  created_from: "Creation Time from",
  created_to: "Creation Time to",
};

function fieldMessage(e) {
  const f = (e.field || "").replace(/^criteria\./, "");
  return FIELD_LABELS[f] ? `${FIELD_LABELS[f]}: ${e.message}` : e.message;
}

async function search(criteria) {
  if (!criteria) return;
  if (Object.keys(criteria).length === 0) {
    say($("search-error"), "Give at least one criterion: a number or its last digits, a consent value, a usage or a creation time.");
    $("f-number").focus();
    return;
  }
  await loadPage(criteria, [""]);
}

// Asks how many consents `criteria` match, and shows it if that is still the search on screen.
async function countMatches(criteria) {
  try {
    const r = await api("GET", `/v1/consents${query({ ...criteria, limit: 1, count: true })}`);
    if (state.criteria === criteria) {
      state.total = r.total;
      renderResults();
    }
  } catch (e) {
    // The page is shown; without a total the caption says what the page holds.
  }
}

// Loads one page of `criteria`. The results shown, and what Save Search and Export act on, are
// always those of the last search that succeeded; a refused one clears them.
async function loadPage(criteria = state.criteria, cursors = state.cursors) {
  const cursor = cursors[cursors.length - 1];
  const sort = state.sort.key === "created_at" && !state.sort.desc ? undefined : `${state.sort.desc ? "-" : ""}${state.sort.key}`;
  const params = { ...criteria, limit: $("page-size").value, cursor: cursor || undefined, sort };
  $("search-btn").disabled = true;
  $("results").setAttribute("aria-busy", "true");
  try {
    const page = await api("GET", `/v1/consents${query(params)}`);
    say($("search-error"), "");
    state.failed = false;
    state.criteria = criteria;
    state.cursors = cursors;
    state.items = page.items;
    state.next = page.next_cursor;
    if (!cursor) state.total = null;
    state.selected.clear();
    state.allMatching = false;
    state.changed.clear();
    renderResults();
    // The total comes after the page is shown: counting the matches is a scan of them all.
    if (!cursor) countMatches(criteria);
  } catch (e) {
    say($("search-error"), fieldMessage(e), true);
    state.failed = true;
    state.criteria = null;
    state.total = null;
    state.cursors = [""];
    state.items = [];
    state.next = null;
    state.selected.clear();
    renderResults();
  } finally {
    $("search-btn").disabled = false;
    $("results").removeAttribute("aria-busy");
  }
}

function renderResults() {
  const body = $("results").querySelector("tbody");
  // Rows are selected for Delete and Change Value: a token with neither has nothing to select for.
  const selectable = can("delete") || can("modify");
  $("select-all").hidden = !selectable;
  const rows = state.items.map((c) => {
    const selected = state.selected.has(c.id);
    const given = c.consent === true;
    const box = el("input", {
      type: "checkbox",
      class: "row-select",
      hidden: !selectable,
      disabled: !selectable,
      "aria-label": `Select ${c.number} ${USAGES[c.usage] || c.usage}`,
      checked: selected,
      onchange: (e) => {
        if (e.target.checked) state.selected.add(c.id);
        else state.selected.delete(c.id);
        e.target.closest("tr").classList.toggle("selected", e.target.checked);
        updateSelection();
      },
    });
    return el(
      "tr",
      { class: [selected ? "selected" : "", state.changed.has(c.id) ? "changed" : ""].join(" ").trim() || undefined, "data-id": c.id },
      el("td", { class: "select" }, box),
      el("td", { class: "number", text: c.number }),
      el("td", { class: "usage", text: USAGES[c.usage] || c.usage }),
      el(
        "td",
        { class: "consent" },
        el("input", {
          type: "checkbox",
          class: "consent-box",
          disabled: !can("modify"),
          checked: given,
          "aria-label": `Consent of ${c.number} ${USAGES[c.usage] || c.usage}: ${given ? "given" : "denied"}`,
          onclick: (e) => {
            e.preventDefault(); // the value changes only once confirmed and stored
            setValue(c, !given);
          },
        }),
        el("span", { class: "value-label", text: given ? "given" : "denied" }),
        state.changed.has(c.id) ? el("span", { class: "changed-mark", text: "changed", title: "Changed since the search; search again to see the rows as it finds them" }) : null
      ),
      el("td", { class: "created", title: c.created_at, text: formatTime(c.created_at) }),
      el("td", { class: "updated", title: c.updated_at, text: formatTime(c.updated_at) }),
      el(
        "td",
        { class: "source" },
        c.source,
        // Who changed it, when and from what: for tokens that may read the audit trail.
        can("manage") || can("dpo")
          ? el("button", { type: "button", class: "history-btn", text: "History", "aria-label": `History of ${c.number} ${USAGES[c.usage] || c.usage}`, onclick: () => showHistory(c) })
          : null
      )
    );
  });
  body.replaceChildren(...rows);
  const page = state.cursors.length;
  const caption = $("results-caption");
  if (state.failed) caption.textContent = "The search was refused (see above): no results are shown.";
  else if (!state.criteria) caption.textContent = "Run a search to see consents.";
  else if (!state.items.length) caption.textContent = page > 1 ? "No more consents." : "No consent matches this search.";
  else if (state.total === null) caption.textContent = `Page ${page}: ${plural(state.items.length, "consent")}${state.next ? ", more on the next page" : ""}.`;
  else caption.textContent = `${plural(state.total, "consent")} match. Page ${page}: ${state.items.length.toLocaleString()}${state.next ? ", more on the next page" : ""}.`;
  $("page-info").textContent = state.criteria && state.items.length ? `Page ${page}` : "";
  $("prev-btn").disabled = page <= 1;
  $("next-btn").disabled = !state.next;
  $("select-all").disabled = !state.items.length;
  $("save-search-btn").disabled = !state.criteria;
  $("export-current-btn").disabled = !state.criteria;
  updateSelection();
}

function updateSelection() {
  const n = state.selected.size;
  const all = $("select-all");
  const whole = n > 0 && n === state.items.length;
  if (!whole) state.allMatching = false;
  all.checked = whole;
  all.indeterminate = n > 0 && n < state.items.length;
  $("delete-btn").disabled = n === 0;
  $("toggle-btn").disabled = n === 0;
  const total = state.total ?? 0;
  $("selection-info").textContent = state.allMatching
    ? `All ${plural(total, "matching consent")} selected`
    : n
      ? `${plural(n, "row")} selected`
      : "";
  // The whole page selected, and more match: offer them all.
  const more = whole && total > state.items.length;
  show($("select-matching"), more);
  $("select-matching").textContent = state.allMatching ? "Select this page only" : `Select all ${plural(total, "matching consent")}`;
}

// The ids the selection stands for: the rows selected, or every consent the search matches.
async function selectedIds() {
  if (!state.allMatching) return [...state.selected];
  const ids = [];
  let cursor;
  do {
    const page = await api("GET", `/v1/consents${query({ ...state.criteria, limit: 1000, cursor })}`);
    ids.push(...page.items.map((c) => c.id));
    cursor = page.next_cursor;
  } while (cursor);
  return ids;
}

// Sends ids in batches the API takes (10,000 at most), gathering the results. A batch that fails
// stops the rest, and the error says how many were done before it: those are changed.
async function inBatches(path, ids) {
  const results = [];
  for (let i = 0; i < ids.length; i += 10000) {
    try {
      const r = await api("POST", path, { ids: ids.slice(i, i + 10000) });
      results.push(...r.results);
    } catch (e) {
      if (i > 0) e.message = `${plural(i, "consent")} of ${ids.length.toLocaleString()} were done, the rest not: ${e.message}`;
      throw e;
    }
  }
  return { results };
}

// ----- Dialogs -----

function closeOnCancel(dialog, button) {
  $(button).addEventListener("click", () => dialog.close("cancel"));
}

// Asks a question; resolves true on the first button. Labels: [yes, no].
function confirmDialog(title, text, labels) {
  const d = $("confirm-dialog");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-yes").textContent = labels[0];
  $("confirm-no").textContent = labels[1];
  d.returnValue = "";
  d.showModal();
  $("confirm-no").focus();
  return new Promise((resolve) => {
    d.addEventListener("close", () => resolve(d.returnValue === "yes"), { once: true });
  });
}

// ----- Add, delete, change value -----

function openAdd() {
  say($("action-status"), ""); // the message of the last action goes when the next starts
  const d = $("add-dialog");
  $("add-number").value = "";
  say($("add-error"), "");
  $("add-number").removeAttribute("aria-invalid");
  d.showModal();
  $("add-number").focus();
}

async function submitAdd(e) {
  e.preventDefault();
  const number = $("add-number").value.trim();
  const usage = $("add-usage").value;
  if (!number) {
    say($("add-error"), "Enter a phone number.");
    $("add-number").setAttribute("aria-invalid", "true");
    $("add-number").focus();
    return;
  }
  $("add-ok").disabled = true;
  try {
    // What is held already is said before anything changes: a denied consent is made given only
    // after a Yes, a given one is left as it is.
    let held = null;
    if (can("view")) {
      held = (await api("GET", `/v1/consents${query({ number, usage })}`)).items[0];
      if (held && held.consent) {
        $("add-dialog").close("ok");
        say($("action-status"), `Nothing added: ${held.number}, ${USAGES[held.usage]}, is given already (since ${formatTime(held.created_at)}).`);
        return;
      }
      if (held) {
        const ok = await confirmDialog(
          "Consent denied",
          `${held.number}, ${USAGES[held.usage]}: denied since ${formatTime(held.created_at)}. Change it to given?`,
          ["Change to given", "Cancel"]
        );
        if (!ok) {
          say($("add-error"), "Nothing changed: the consent stays denied.");
          return;
        }
      }
    }
    const c = await api("POST", "/v1/consents", { number, usage });
    $("add-dialog").close("ok");
    say($("action-status"), `${held ? "Changed to given" : "Added"}: ${c.number}, ${USAGES[c.usage]}, given.`);
    if (!can("view")) return;
    if (state.criteria) await loadPage();
    else {
      fillForm({ number: c.number });
      await search({ number: c.number });
    }
  } catch (err) {
    say($("add-error"), err.message);
    $("add-number").setAttribute("aria-invalid", "true");
    $("add-number").focus();
  } finally {
    $("add-ok").disabled = false;
  }
}

// Rows the user changed stay where they are, with their new value and times and a mark, until the
// next search: searching again would move them (a new value takes a new creation time) or drop them.
function changedInPlace(updates) {
  for (const u of updates) {
    const row = state.items.find((c) => c.id === u.id);
    if (!row) continue;
    for (const k of ["consent", "created_at", "updated_at", "source"]) if (u[k] !== undefined) row[k] = u[k];
    state.changed.add(u.id);
  }
  renderResults();
}

// The Consent checkbox of one row: sets that consent to the other value after a Yes.
async function setValue(c, consent) {
  say($("action-status"), ""); // the message of the last action goes when the next starts
  const what = `${c.number} (${USAGES[c.usage] || c.usage})`;
  const ok = await confirmDialog("Change Value", `Set the consent of ${what} to ${consent ? "given" : "denied"}?`, ["Yes", "No"]);
  if (!ok) return;
  try {
    const now = await api("PUT", `/v1/consents/${encodeURIComponent(c.id)}`, { consent });
    say($("action-status"), `The consent of ${what} is now ${consent ? "given" : "denied"}.`);
    changedInPlace([now]);
  } catch (e) {
    say($("action-status"), e.message, true);
  }
}

async function deleteSelected() {
  say($("action-status"), ""); // the message of the last action goes when the next starts
  if (!state.selected.size) return;
  const count = state.allMatching ? state.total : state.selected.size;
  const ok = await confirmDialog("Delete", `Delete ${plural(count, "consent")}${state.allMatching ? " (all that match the search)" : ""}? The audit trail keeps the record of it.`, ["OK", "Cancel"]);
  if (!ok) return;
  try {
    const ids = await selectedIds();
    const r = await inBatches("/v1/consents/delete", ids);
    const deleted = r.results.filter((x) => x.outcome === "deleted").length;
    say($("action-status"), `Deleted ${plural(deleted, "consent")}.${deleted < ids.length ? ` ${ids.length - deleted} no longer existed.` : ""}`);
    await loadPage();
  } catch (e) {
    say($("action-status"), e.message, true);
  }
}

async function toggleSelected() {
  say($("action-status"), ""); // the message of the last action goes when the next starts
  if (!state.selected.size) return;
  const count = state.allMatching ? state.total : state.selected.size;
  const ok = await confirmDialog(
    "Change Value",
    `Change the value of ${plural(count, "consent")}${state.allMatching ? " (all that match the search)" : ""} (given becomes denied, denied becomes given)?`,
    ["Yes", "No"]
  );
  if (!ok) return;
  try {
    const ids = await selectedIds();
    const r = await inBatches("/v1/consents/toggle", ids);
    const changed = r.results.filter((x) => x.outcome === "updated").length;
    say($("action-status"), `Changed the value of ${plural(changed, "consent")}.`);
    // The rows stay where they are, selected, so a second Change Value undoes the first.
    changedInPlace(r.results.filter((x) => x.outcome === "updated"));
  } catch (e) {
    say($("action-status"), e.message, true);
    // Some batches of a bulk change may have gone through: show the rows as they now are.
    if (state.allMatching && state.criteria) await loadPage();
  }
}

// One consent's audit trail, newest first: when, who, from which source, from what to what.
/** What proves a change beyond its source and actor: the IVR call, or the file and line it was imported from. */
function proofText(origin) {
  if (!origin) return "—";
  const parts = [];
  if (origin.call_id) parts.push(`call ${origin.call_id}`);
  if (origin.file) parts.push(origin.line ? `${origin.file}, line ${origin.line}` : origin.record ? `${origin.file}, record ${origin.record}` : origin.file);
  return parts.join("; ") || "—";
}

async function showHistory(c) {
  const what = `${c.number}, ${USAGES[c.usage] || c.usage}`;
  $("history-title").textContent = `History of ${what}`;
  say($("history-error"), "");
  $("history-table").replaceChildren(el("p", { class: "muted", text: "Loading…" }));
  $("history-dialog").showModal();
  try {
    const r = await api("GET", `/v1/audit${query({ number: c.number, limit: 1000 })}`);
    const entries = r.items.filter((a) => a.usage === c.usage).reverse();
    $("history-table").replaceChildren(
      entries.length
        ? table(
            ["When", "Who", "Source", "Proof", "Before", "After"],
            entries.map((a) => [formatTime(a.at), a.actor, a.source, proofText(a.origin), a.before ? (a.before.consent ? "given" : "denied") : "—", a.after ? (a.after.consent ? "given" : "denied") : "deleted"]),
            { id: "history-entries" }
          )
        : el("p", { class: "muted", text: "No change is recorded." })
    );
  } catch (e) {
    $("history-table").replaceChildren();
    say($("history-error"), e.message, true);
  }
}

// ----- Saved searches -----

async function loadSaved() {
  try {
    const r = await api("GET", "/v1/searches");
    say($("saved-error"), "");
    const items = r.items.map((s) =>
      el(
        "li",
        {},
        el("button", {
          type: "button",
          class: "run",
          text: s.name,
          title: describeCriteria(s.criteria),
          onclick: () => {
            fillForm(s.criteria);
            selectTab("consents");
            search({ ...s.criteria });
          },
        }),
        el("button", {
          type: "button",
          class: "remove",
          text: "Delete",
          "aria-label": `Delete saved search ${s.name}`,
          onclick: () => removeSaved(s.name),
        })
      )
    );
    $("saved-list").replaceChildren(...items);
    show($("saved-empty"), items.length === 0);
  } catch (e) {
    say($("saved-error"), e.message);
  }
}

function describeCriteria(c) {
  const parts = [];
  if (c.number) parts.push(`number ${c.number}`);
  if (c.digits) parts.push(`number ending in ${c.digits}`);
  if (c.consent) parts.push(c.consent === "true" ? "given" : "denied");
  if (c.usage) parts.push(USAGES[c.usage] || c.usage);
  if (c.created_from) parts.push(`created from ${formatTime(c.created_from)}`);
  if (c.created_to) parts.push(`created to ${formatTime(c.created_to)}`);
  return parts.join(", ") || "all consents";
}

function openSave() {
  say($("action-status"), ""); // the message of the last action goes when the next starts
  if (!state.criteria) return;
  $("save-name").value = "";
  say($("save-error"), "");
  $("save-dialog").showModal();
  $("save-name").focus();
}

async function submitSave(e) {
  e.preventDefault();
  const name = $("save-name").value.trim();
  if (!name) {
    say($("save-error"), "Give the search a name.");
    return;
  }
  try {
    const existing = await api("GET", "/v1/searches");
    if (existing.items.some((x) => x.name === name)) {
      const ok = await confirmDialog(
        "Replace saved search",
        `A saved search "${name}" exists (${describeCriteria(existing.items.find((x) => x.name === name).criteria)}). Replace it with this one?`,
        ["Replace", "Cancel"]
      );
      if (!ok) {
        say($("save-error"), "Not saved: give another name, or replace the saved search.");
        $("save-name").focus();
        return;
      }
    }
    await api("POST", "/v1/searches", { name, criteria: state.criteria });
    $("save-dialog").close("ok");
    say($("action-status"), `Saved the search as "${name}".`);
    await loadSaved();
  } catch (err) {
    say($("save-error"), err.message);
  }
}

async function removeSaved(name) {
  const ok = await confirmDialog("Delete saved search", `Delete the saved search "${name}"?`, ["OK", "Cancel"]);
  if (!ok) return;
  try {
    await api("DELETE", `/v1/searches/${encodeURIComponent(name)}`);
    await loadSaved();
  } catch (e) {
    say($("saved-error"), e.message);
  }
}

// ----- Import and export -----

async function loadMappings() {
  if (state.mappingsLoaded || !can("manage")) return;
  try {
    const r = await api("GET", "/v1/mappings");
    for (const id of ["import-mapping", "export-mapping"]) {
      const options = r.items.map((m) =>
        el("option", { value: m.name, disabled: !!m.problems, text: m.problems ? `${m.name} (has problems)` : `${m.name} (${m.format})` })
      );
      $(id).replaceChildren(...options);
    }
    state.mappings = r.items.filter((m) => !m.problems);
    const first = state.mappings.find((m) => m.name === "generic-csv") || state.mappings[0];
    if (first) {
      $("import-mapping").value = first.name;
      $("export-mapping").value = first.name;
    }
    state.mappingsLoaded = true;
  } catch (e) {
    say($("import-error"), e.message);
  }
}

// A file chosen: pick a mapping of its format (a generic one first) unless one of that format is chosen.
function guessMapping() {
  const file = $("import-file").files[0];
  const ext = file && (file.name.match(/\.([a-z0-9]+)$/i) || [])[1];
  if (!ext) return;
  const fits = state.mappings.filter((m) => m.format === ext.toLowerCase());
  const chosen = state.mappings.find((m) => m.name === $("import-mapping").value);
  if (!fits.length || (chosen && chosen.format === ext.toLowerCase())) return;
  $("import-mapping").value = (fits.find((m) => m.name.startsWith("generic-")) || fits[0]).name;
}

function describeExport() {
  $("export-criteria").textContent = state.criteria
    ? `Exports the consents of the current search: ${describeCriteria(state.criteria)}.`
    : "No search yet: exports every consent.";
}

function setProgress(phase, done, total) {
  show($("import-progress"), true);
  $("import-phase").textContent = phase;
  const bar = $("import-bar");
  if (total > 0) {
    const pct = Math.min(100, Math.round((done / total) * 100));
    bar.value = pct;
    $("import-percent").textContent = `${pct} %`;
  } else {
    bar.removeAttribute("value");
    $("import-percent").textContent = "";
  }
}

// Sends the file with its upload progress; resolves with the parsed answer.
function upload(url, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.setRequestHeader("Authorization", `Bearer ${state.token}`);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.addEventListener("progress", (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size));
    xhr.addEventListener("load", () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch (e) {
        data = { message: xhr.responseText };
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiError(xhr.status, data));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, { message: "the upload failed: the daemon cannot be reached" })));
    xhr.send(file);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function submitImport(e) {
  e.preventDefault();
  const file = $("import-file").files[0];
  const mapping = $("import-mapping").value;
  if (!file) {
    say($("import-error"), "Choose a file.");
    $("import-file").focus();
    return;
  }
  if (!mapping) {
    say($("import-error"), "Choose a mapping.");
    return;
  }
  say($("import-error"), "");
  $("import-btn").disabled = true;
  const params = {
    mapping,
    name: file.name,
    background: "true",
    dry_run: $("import-dry-run").checked ? "true" : undefined,
    strict: $("import-strict").checked ? "true" : undefined,
  };
  try {
    setProgress("Uploading", 0, file.size);
    const job = await upload(`/v1/imports${query(params)}`, file, (done, total) => setProgress("Uploading", done, total));
    let status;
    for (;;) {
      status = await api("GET", `/v1/imports/${job.job}`);
      if (status.state !== "running") break;
      const verb = params.dry_run ? "Checking (dry run)" : "Importing";
      if (status.bytes_total > 0 && status.bytes_read >= status.bytes_total) {
        // All read; the last chunk is being decided and written.
        setProgress(`${verb}: finishing`, 0, 0);
      } else {
        setProgress(verb, status.bytes_read, status.bytes_total);
      }
      await sleep(400);
    }
    if (status.state === "failed") throw new ApiError(status.error.status, status.error);
    setProgress("Done", 1, 1);
    renderImportReport(status.report);
    if (state.criteria && !status.report.dry_run) loadPage();
  } catch (err) {
    show($("import-progress"), false);
    say($("import-error"), fieldMessage(err));
  } finally {
    $("import-btn").disabled = false;
  }
}

function figures(pairs) {
  return el("dl", { class: "figures" }, ...pairs.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: v }))));
}

function renderImportReport(r) {
  const whole = r.complete !== false;
  const refused = r.rejected ? `, ${plural(r.rejected, "record")} refused` : "";
  const head = r.dry_run
    ? `Dry run: nothing was written${refused}. This is what the import would do.`
    : r.applied
      ? r.rejected || !whole
        ? `Imported in part${refused}.`
        : "Imported."
      : "Nothing was applied (strict: some records were refused).";
  // Green when all was taken, amber when taken in part, red when nothing was.
  const tone = !r.rejected && whole ? "status" : r.applied || r.dry_run ? "status warn" : "status bad";
  const parts = [
    el("p", { class: tone, id: "import-headline", text: `${head} ${r.files.join(", ")} through ${r.mapping}, in ${r.seconds.toFixed(2)} s.` }),
    el("p", {
      class: whole ? "status" : "status bad",
      id: "import-whole",
      text: whole ? "The whole file was read." : "The file was NOT read to its end: see below where reading stopped.",
    }),
    figures([
      ["Read", r.read.toLocaleString()],
      ["Inserted", r.inserted.toLocaleString()],
      ["Updated", r.updated.toLocaleString()],
      ["Unchanged", r.unchanged.toLocaleString()],
      ["Deleted", r.deleted.toLocaleString()],
      ["Refused", r.rejected.toLocaleString()],
      ["Skipped", (r.skipped || 0).toLocaleString()],
    ]),
  ];
  for (const u of r.unread || []) {
    const where = [u.line ? `line ${u.line}` : "", u.record ? `record ${u.record}` : "", u.path || ""].filter(Boolean).join(", ");
    const left = u.bytes == null ? "the file was not read" : `${plural(u.lines, "line")} (${plural(u.bytes, "byte")}) not read`;
    parts.push(el("p", { class: "status bad", text: `${u.file}${where ? ` (${where})` : ""}: ${u.reason}; ${left}.` }));
  }
  if (r.rejects.length) {
    parts.push(
      el("h3", { text: `Refused records${r.rejects.length < r.rejected ? ` (the first ${r.rejects.length} of ${r.rejected})` : ""}` }),
      rejectsTable(r.rejects, { class: "rejects", id: "rejects-table" })
    );
  }
  if ((r.skips || []).length) {
    parts.push(
      el("h3", { text: `Skipped: not consents of ours${r.skips.length < r.skipped ? ` (the first ${r.skips.length} of ${r.skipped})` : ""}` }),
      rejectsTable(r.skips, { class: "rejects", id: "skips-table" })
    );
  }
  $("import-report").replaceChildren(...parts);
}

function openExport() {
  selectTab("transfer");
  $("export-mapping").focus();
}

async function submitExport(e) {
  e.preventDefault();
  const mapping = $("export-mapping").value;
  if (!mapping) {
    say($("export-error"), "Choose a mapping.");
    return;
  }
  say($("export-error"), "");
  $("export-btn").disabled = true;
  say($("export-status"), "Exporting…");
  try {
    const res = await fetch(`/v1/exports${query({ mapping, ...(state.criteria || {}) })}`, {
      headers: { Authorization: `Bearer ${state.token}` },
    });
    if (!res.ok) {
      let body = null;
      try {
        body = await res.json();
      } catch (err) {
        body = null;
      }
      throw new ApiError(res.status, body);
    }
    // Read it as it comes, showing how much has arrived.
    const reader = res.body.getReader();
    const chunks = [];
    let size = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
      say($("export-status"), `Exporting… ${(size / 1048576).toFixed(1)} MB received`);
    }
    const disposition = res.headers.get("Content-Disposition") || "";
    const name = (disposition.match(/filename="([^"]+)"/) || [])[1] || `consents-${mapping}`;
    const blob = new Blob(chunks, { type: res.headers.get("Content-Type") || "application/octet-stream" });
    const url = URL.createObjectURL(blob);
    const a = el("a", { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    say($("export-status"), `Downloaded ${name} (${(size / 1024).toFixed(1)} KiB).`);
  } catch (err) {
    say($("export-status"), "");
    say($("export-error"), fieldMessage(err));
  } finally {
    $("export-btn").disabled = false;
  }
}

// ----- Sync -----

let syncPoll = null;

async function loadSync() {
  if (!can("manage")) return;
  try {
    const r = await api("GET", "/v1/sync");
    // A failed listing's message goes once the listing works; what a run came to stays.
    if (syncLoadFailed) say($("sync-error"), "");
    syncLoadFailed = false;
    renderSync(r.items);
    const running = r.items.some((c) => c.running);
    if (running && !syncPoll) syncPoll = setTimeout(() => ((syncPoll = null), loadSync()), 1000);
  } catch (e) {
    syncLoadFailed = true;
    say($("sync-error"), e.message, true);
  }
}

let syncLoadFailed = false;

function runFigures(run) {
  if (!run) return "";
  const parts = [];
  if (run.pulled) parts.push(`${run.pulled.toLocaleString()} pulled`);
  if (run.inserted) parts.push(`${run.inserted.toLocaleString()} new`);
  if (run.updated) parts.push(`${run.updated.toLocaleString()} updated`);
  if (run.deleted) parts.push(`${run.deleted.toLocaleString()} deleted`);
  if (run.rejected) parts.push(`${run.rejected.toLocaleString()} refused`);
  if (run.pushed) parts.push(`${run.pushed.toLocaleString()} pushed`);
  if (run.push_refused) parts.push(`${run.push_refused.toLocaleString()} push refused`);
  if (run.erasures_pending) parts.push(`${run.erasures_pending.toLocaleString()} erasure(s) owed`);
  return parts.join(", ") || "nothing to do";
}

// A cron schedule (`sec min hour day month weekday`, or five fields without seconds) in words, for
// the common shapes; any other is shown as written. Times of day are in the connector's zone.
function scheduleWords(cron, zone) {
  const f = cron.trim().split(/\s+/);
  const [sec, min, hour, dom, mon, dow] = f.length === 5 ? ["0", ...f] : f;
  if (f.length !== 5 && f.length !== 6) return cron;
  const every = (v) => (/^\*\/(\d+)$/.exec(v) || [])[1];
  const num = (v) => (/^\d+$/.test(v) ? Number(v) : null);
  const any = (v) => v === "*" || v === "?";
  const at = () => `${String(num(hour)).padStart(2, "0")}:${String(num(min)).padStart(2, "0")}${num(sec) ? `:${String(num(sec)).padStart(2, "0")}` : ""} ${zone || "UTC"}`;
  const n = (k, one, many) => (k === "1" ? one : `every ${k} ${many}`);
  if (any(dom) && any(mon) && any(dow)) {
    if (every(sec) && any(min) && any(hour)) return n(every(sec), "every second", "seconds");
    if (any(sec) && any(min) && any(hour)) return "every second";
    if (num(sec) !== null && every(min) && any(hour)) return n(every(min), "every minute", "minutes") + (num(sec) ? ` at second ${num(sec)}` : "");
    if (num(sec) !== null && any(min) && any(hour)) return "every minute" + (num(sec) ? ` at second ${num(sec)}` : "");
    if (num(sec) !== null && num(min) !== null && any(hour)) return `hourly at minute ${num(min)}`;
    if (num(sec) !== null && num(min) !== null && every(hour)) return `${n(every(hour), "every hour", "hours")} at minute ${num(min)}`;
    if (num(sec) !== null && num(min) !== null && num(hour) !== null) return `daily at ${at()}`;
  }
  const months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
  if (num(sec) !== null && num(min) !== null && num(hour) !== null && num(dom) !== null && any(dow)) {
    if (num(mon) !== null && num(mon) >= 1 && num(mon) <= 12) return `yearly on ${num(dom)} ${months[num(mon) - 1]} at ${at()}`;
    if (any(mon)) return `monthly on day ${num(dom)} at ${at()}`;
  }
  return cron;
}

function renderSync(items) {
  const rows = items.map((c) => {
    const last = c.runs[0];
    const live = c.running ? c.progress || last : null;
    let outcome = last ? last.outcome : "never run";
    if (c.running) {
      const since = live && live.started ? Math.round((Date.now() - new Date(live.started)) / 1000) : 0;
      outcome = `running for ${since} s`;
    }
    const outcomeClass = c.running ? "outcome-running" : last ? `outcome-${last.outcome}` : "muted";
    const waiting = [];
    if (c.dead_letters) waiting.push(`${c.dead_letters} dead letter${c.dead_letters === 1 ? "" : "s"}`);
    if (c.refused_batches) waiting.push(`${c.refused_batches} refused batch${c.refused_batches === 1 ? "" : "es"}`);
    if (c.skipped_ticks) waiting.push(`${c.skipped_ticks} skipped tick${c.skipped_ticks === 1 ? "" : "s"}`);
    if (c.erasures_pending && c.erasures_pending.length) waiting.push(`${plural(c.erasures_pending.length, "erasure")} owed`);
    return el(
      "tr",
      { "data-connector": c.name },
      el("td", {}, el("strong", { text: c.name }), el("div", { class: "hint", text: `${c.transport}, ${c.mapping}` })),
      el("td", { text: c.direction }),
      el("td", { class: "schedule", title: `${c.schedule} (${c.timezone})`, text: scheduleWords(c.schedule, c.timezone) }),
      el("td", { text: formatTime(c.next_run) }),
      el("td", { text: last ? formatTime(last.started) : "" }),
      el("td", { class: outcomeClass, title: last && (last.error || (last.warnings || []).join("; ")) || undefined, text: outcome }),
      el("td", { class: "counts", text: runFigures(live || last) }),
      el(
        "td",
        {},
        waiting.join(", "),
        c.dead_letters
          ? el("button", {
              type: "button",
              class: "show-dead",
              text: "Show refused records",
              "aria-label": `Show the refused records of ${c.name}`,
              onclick: () => loadDeadLetters(c.name),
            })
          : null
      ),
      el(
        "td",
        {},
        el("button", {
          type: "button",
          class: "run-now",
          text: c.running ? "Running…" : "Run now",
          disabled: c.running,
          "aria-label": `Run ${c.name} now`,
          onclick: () => runConnector(c.name),
        })
      )
    );
  });
  $("sync-table").querySelector("tbody").replaceChildren(...rows);
  if (!items.length) $("sync-table").querySelector("tbody").replaceChildren(el("tr", {}, el("td", { colspan: 9, class: "muted", text: "No connectors are configured." })));
}

// The refused records of a connector's pulls, with where and why, each replayable.
async function loadDeadLetters(name) {
  try {
    const r = await api("GET", `/v1/sync/${encodeURIComponent(name)}/dead-letters`);
    const letters = r.items.map((dl) =>
      el(
        "section",
        { class: "dead-letter" },
        el(
          "div",
          { class: "heading-row" },
          el("h3", { text: `${formatTime(dl.at)}: ${plural(dl.rejected, "refused record")} from ${dl.origin}` }),
          el("button", {
            type: "button",
            class: "replay",
            text: "Replay",
            "aria-label": `Replay the refused records of ${dl.origin}`,
            onclick: () => replay(name, dl.id),
          })
        ),
        rejectsTable(dl.rejects)
      )
    );
    $("dead-title").textContent = `Refused records of ${name}`;
    $("dead-letters").replaceChildren(...(letters.length ? letters : [el("p", { class: "muted", text: "None left." })]));
    show($("dead-panel"), true);
  } catch (e) {
    say($("sync-error"), e.message);
  }
}

async function replay(name, id) {
  try {
    const r = await api("POST", `/v1/sync/${encodeURIComponent(name)}/dead-letters/${id}/replay`);
    say(
      $("dead-status"),
      r.rejected
        ? `Replayed: ${plural(r.inserted + r.updated, "consent")} taken, ${plural(r.rejected, "record")} still refused.`
        : `Replayed: all taken (${plural(r.inserted + r.updated, "consent")} stored).`,
      r.rejected > 0
    );
    await loadDeadLetters(name);
    await loadSync();
  } catch (e) {
    say($("dead-status"), e.message, true);
  }
}

async function runConnector(name) {
  say($("sync-error"), "");
  const run = api("POST", `/v1/sync/${encodeURIComponent(name)}/run`);
  // The run answers when it is done; meanwhile the table shows its figures so far.
  setTimeout(loadSync, 150);
  let message = "";
  try {
    const report = await run;
    if (report.outcome === "failed") message = `${name}: the run failed: ${report.error}`;
    else if (report.outcome === "partial") message = `${name}: the run was partial: ${(report.warnings || []).join("; ")}`;
  } catch (e) {
    message = e.status === 409 ? `${name} is running already.` : e.message;
  }
  // The table first (it clears the line), then what this run came to.
  await loadSync();
  say($("sync-error"), message, !!message);
}

// ----- DPO -----

let dpoNumber = null;

async function lookup(e) {
  if (e) e.preventDefault();
  const text = $("dpo-number").value.trim();
  if (!text) {
    say($("dpo-error"), "Enter a number or its last digits.");
    return;
  }
  const params = numberCriterion(text);
  try {
    const r = await api("GET", `/v1/dpo/report${query(params)}`);
    say($("dpo-error"), "");
    renderReport(r);
  } catch (err) {
    $("dpo-report").replaceChildren();
    say($("dpo-error"), fieldMessage(err));
  }
}

function table(headers, rows, attrs) {
  return el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      attrs || {},
      el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((v) => el("td", { text: v })))))
    )
  );
}

// Refused records (of an import or a sync pull): where, field, value (hidden without view) and why.
function rejectsTable(rejects, attrs) {
  const rows = rejects.map((x) => [x.line ? `line ${x.line}` : x.path || `record ${x.record}`, x.field || "", x.value ?? "", x.reason]);
  return table(["Where", "Field", "Value", "Why"], rows, attrs);
}

function valueText(c) {
  return c ? `${USAGES[c.usage] || c.usage}: ${c.consent ? "given" : "denied"}` : "—";
}

function renderReport(r) {
  say($("dpo-status"), "");
  if (!r.numbers.length) {
    $("dpo-report").replaceChildren(el("p", { class: "card", text: "No personal data is held on this number." }));
    return;
  }
  // Trailing digits that match several numbers: a compact list to pick the data subject from.
  if (r.numbers.length > 1) {
    const rows = r.numbers.map((h) =>
      el(
        "tr",
        { "data-number": h.number },
        el("td", { class: "number", text: h.number }),
        el("td", { text: h.consents.map((c) => `${USAGES[c.usage] || c.usage}: ${c.consent ? "given" : "denied"}`).join(", ") || "none held" }),
        el("td", { text: String(h.history.length) }),
        el("td", { text: (h.purges || []).length ? "purged" : "" }),
        el(
          "td",
          {},
          el("button", {
            type: "button",
            class: "pick",
            text: "Show",
            "aria-label": `Show everything held on ${h.number}`,
            onclick: () => {
              $("dpo-number").value = h.number;
              lookup();
            },
          })
        )
      )
    );
    const list = el(
      "section",
      { class: "card", "aria-label": "Numbers ending in these digits" },
      el("h3", { text: `${plural(r.numbers.length, "number")} end in these digits${r.truncated ? " (more than shown: give more digits)" : ""}` }),
      el(
        "div",
        { class: "table-wrap" },
        el(
          "table",
          { id: "dpo-matches" },
          el("thead", {}, el("tr", {}, ...["Number", "Consents", "History", "", ""].map((h) => el("th", { scope: "col", text: h })))),
          el("tbody", {}, ...rows)
        )
      )
    );
    $("dpo-report").replaceChildren(list);
    return;
  }
  const cards = r.numbers.map((h) => {
    const purges = h.purges || [];
    // Purged and nothing held since: what the purge did, and the erasures still owed.
    if (purges.length && !h.consents.length && !h.history.length && !h.saved_searches.length && !h.dead_letters.length) {
      const owed = h.erasures.filter((e) => e.status === "pending");
      const parts = [
        el("h3", { text: h.number }),
        ...purges.map((p) =>
          el("p", {
            class: "purged",
            text: `Purged ${formatTime(p.at)} by ${p.actor}: ${plural(p.removed.consents, "consent")}, ${plural(p.removed.audit_entries, "history entry", "history entries")}${
              p.detail && p.detail.files && p.detail.files.length ? `, ${plural(p.detail.files.length, "file")} rewritten` : ""
            }.`,
          })
        ),
        el("p", { class: owed.length ? "status bad" : "muted", text: owed.length ? `Deletion still owed at ${owed.map((e) => e.connector).join(", ")}.` : "Nothing is held on this number." }),
      ];
      if (h.erasures.length) {
        parts.push(el("h4", { text: "Deletion at other systems" }), erasureTable(h.erasures));
      }
      return el("section", { class: "card report-number", "aria-label": `Data held on ${h.number}` }, ...parts);
    }
    const parts = [
      el(
        "div",
        { class: "heading-row" },
        el("h3", { text: h.number }),
        el("button", { type: "button", class: "danger purge-btn", text: "Purge…", onclick: () => openPurge(h.number) })
      ),
      el("h4", { text: "Consents" }),
      h.consents.length
        ? table(
            ["Usage", "Consent", "Created", "Updated", "Source"],
            h.consents.map((c) => [USAGES[c.usage] || c.usage, c.consent ? "given" : "denied", formatTime(c.created_at), formatTime(c.updated_at), c.source])
          )
        : el("p", { class: "muted", text: "None held now." }),
      el("h4", { text: `History (${h.history.length})` }),
      table(
        ["When", "Who", "Source", "Proof", "Before", "After"],
        h.history.map((a) => [formatTime(a.at), a.actor, a.source, proofText(a.origin), valueText(a.before), valueText(a.after)])
      ),
    ];
    if (h.saved_searches.length) {
      parts.push(el("h4", { text: "Saved searches naming it" }), table(["Owner", "Name"], h.saved_searches.map((s) => [s.owner, s.name])));
    }
    if (h.dead_letters.length) {
      parts.push(
        el("h4", { text: "Refused sync records holding it" }),
        table(["Connector", "When", "From", "Refused"], h.dead_letters.map(([c, d]) => [c, formatTime(d.at), d.origin, String(d.rejected)]))
      );
    }
    if (h.erasures.length) {
      parts.push(el("h4", { text: "Deletion at other systems" }), erasureTable(h.erasures));
    }
    return el("section", { class: "card report-number", "aria-label": `Data held on ${h.number}` }, ...parts);
  });
  if (r.truncated) cards.unshift(el("p", { class: "status bad", text: "More numbers end in these digits than one report shows; give more digits." }));
  // The report as the answer to a data-subject request: the file the API gives with download=true,
  // or this page printed.
  const stamp = (r.generated_at || new Date().toISOString()).replace(/[^0-9A-Za-z]/g, "");
  cards.unshift(
    el(
      "div",
      { class: "toolbar report-actions" },
      el("button", {
        type: "button",
        id: "dpo-download",
        text: "Download report (JSON)",
        onclick: () => {
          const url = URL.createObjectURL(new Blob([JSON.stringify(r, null, 2)], { type: "application/json" }));
          const a = el("a", { href: url, download: `consentd-dpo-report-${stamp}.json` });
          document.body.append(a);
          a.click();
          a.remove();
          setTimeout(() => URL.revokeObjectURL(url), 60000);
          say($("dpo-status"), `Downloaded consentd-dpo-report-${stamp}.json.`);
        },
      }),
      el("button", { type: "button", id: "dpo-print", text: "Print…", onclick: () => window.print() }),
      el("span", { class: "muted", text: `Made ${formatTime(r.generated_at)} by ${r.generated_by}.` })
    )
  );
  $("dpo-report").replaceChildren(...cards);
}

// ----- Check a number -----

const RECORDING_WORDS = {
  record: "may be recorded (consent given)",
  do_not_record: "must not be recorded (consent denied)",
  ask: "ask the caller first (no answer held)",
};

// The two questions other systems ask, answered by the API for one number.
async function check(e) {
  if (e) e.preventDefault();
  const text = $("check-number").value.trim();
  say($("check-error"), "");
  show($("check-result"), false);
  if (!text) {
    say($("check-error"), "Enter the full number (with + or a leading 0).", true);
    $("check-number").focus();
    return;
  }
  // A date alone is its start, as a search's "from" bound reads it.
  const last = bound("check-last", false);
  if (last.error) {
    say($("check-error"), `Customer's last message: ${last.error}.`, true);
    $("check-last").focus();
    return;
  }
  const lastAt = last.value;
  const path = encodeURIComponent(text);
  try {
    const [rec, wa] = await Promise.all([
      api("GET", `/v1/checks/recording/${path}`),
      api("GET", `/v1/checks/whatsapp/${path}${query({ last_customer_message_at: lastAt })}`),
    ]);
    $("check-shown").textContent = text;
    $("check-recording").textContent = RECORDING_WORDS[rec.decision] || rec.decision;
    const may = [];
    if (wa.freeform) may.push(`free-form messages${wa.window_closes_at ? ` until ${formatTime(wa.window_closes_at)}` : ""}`);
    if (wa.template) may.push("template messages");
    $("check-whatsapp").textContent = may.length ? `may send ${may.join(" and ")}` : "may not write to this number";
    $("check-why").textContent = wa.reason;
    show($("check-result"), true);
  } catch (err) {
    say($("check-error"), fieldMessage(err), true);
  }
}

// Per connector: whether a purge reached it, its attempts and the remote's last answer.
function erasureTable(erasures) {
  return table(
    ["Connector", "Status", "Attempts", "Last try", "Last answer"],
    erasures.map((e) => [
      e.connector,
      e.status === "handled" ? `handled by ${e.by}: ${e.note}` : e.status,
      String(e.attempts),
      formatTime(e.last_try || e.at),
      e.last_status ? `${e.last_status} ${e.last_answer || ""}` : e.last_answer || "",
    ])
  );
}

// A number as typed, without separators, 00 written as +: how it is compared with the number shown.
function compact(s) {
  return s.replace(/[\s\-().\/]/g, "").replace(/^00/, "+");
}

function openPurge(number) {
  dpoNumber = number;
  $("purge-number").textContent = number;
  $("purge-confirm").value = "";
  $("purge-ok").disabled = true;
  say($("purge-error"), "");
  $("purge-dialog").showModal();
  $("purge-confirm").focus();
}

async function submitPurge(e) {
  e.preventDefault();
  if (compact($("purge-confirm").value) !== dpoNumber) {
    say($("purge-error"), "The number typed is not the number shown.");
    return;
  }
  $("purge-ok").disabled = true;
  try {
    const event = await api("POST", "/v1/dpo/purge", { number: dpoNumber });
    $("purge-dialog").close("ok");
    const r = event.removed;
    say(
      $("dpo-status"),
      `Purged: ${plural(r.consents, "consent")}, ${plural(r.audit_entries, "audit entry", "audit entries")}, ${plural(r.saved_searches, "saved search", "saved searches")} removed. Push connectors are asked to delete the number.`
    );
    $("dpo-report").replaceChildren();
    $("dpo-number").value = "";
  } catch (err) {
    say($("purge-error"), err.message);
    $("purge-ok").disabled = false;
  }
}

// ----- Wiring -----

function init() {
  $("created-header").textContent = `Creation Time (${ZONE})`;
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    if (!token) {
      say($("signin-error"), "Enter your token.");
      return;
    }
    signIn(token, false);
  });
  $("sign-out").addEventListener("click", () => signOut());
  for (const t of TABS) {
    $(`tab-${t}`).addEventListener("click", () => selectTab(t));
    $(`tab-${t}`).addEventListener("keydown", onTabKey);
  }
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    say($("action-status"), ""); // the message of the last action goes when the next starts
    search(formCriteria());
  });
  $("clear-btn").addEventListener("click", () => {
    fillForm({});
    say($("search-error"), "");
    $("f-number").focus();
  });
  $("prev-btn").addEventListener("click", () => {
    loadPage(state.criteria, state.cursors.length > 1 ? state.cursors.slice(0, -1) : state.cursors);
  });
  $("next-btn").addEventListener("click", () => {
    if (!state.next) return;
    loadPage(state.criteria, [...state.cursors, state.next]);
  });
  $("f-range").addEventListener("change", (e) => quickRange(e.target.value));
  for (const id of ["f-from", "f-from-time", "f-to", "f-to-time"]) {
    $(id).addEventListener("input", () => {
      $("f-range").value = "";
    });
  }
  $("page-size").addEventListener("change", () => state.criteria && search(state.criteria));
  $("select-all").addEventListener("change", (e) => {
    state.selected = new Set(e.target.checked ? state.items.map((c) => c.id) : []);
    renderResults();
  });
  // A column header sorts the whole search by it; again, the other way round.
  for (const th of document.querySelectorAll("#results th[data-sort]")) {
    th.querySelector("button").addEventListener("click", () => {
      const key = th.dataset.sort;
      state.sort = { key, desc: state.sort.key === key ? !state.sort.desc : false };
      for (const other of document.querySelectorAll("#results th[data-sort]")) {
        if (other === th) other.setAttribute("aria-sort", state.sort.desc ? "descending" : "ascending");
        else other.removeAttribute("aria-sort");
      }
      if (state.criteria) loadPage(state.criteria, [""]);
    });
  }
  $("select-matching").addEventListener("click", () => {
    state.allMatching = !state.allMatching;
    updateSelection();
  });
  $("add-btn").addEventListener("click", openAdd);
  $("add-form").addEventListener("submit", submitAdd);
  closeOnCancel($("add-dialog"), "add-cancel");
  $("delete-btn").addEventListener("click", deleteSelected);
  $("toggle-btn").addEventListener("click", toggleSelected);
  $("save-search-btn").addEventListener("click", openSave);
  $("save-form").addEventListener("submit", submitSave);
  closeOnCancel($("save-dialog"), "save-cancel");
  $("export-current-btn").addEventListener("click", openExport);
  $("import-form").addEventListener("submit", submitImport);
  $("import-file").addEventListener("change", guessMapping);
  $("export-form").addEventListener("submit", submitExport);
  $("sync-refresh").addEventListener("click", loadSync);
  $("dpo-form").addEventListener("submit", lookup);
  $("check-form").addEventListener("submit", check);
  $("purge-form").addEventListener("submit", submitPurge);
  $("purge-confirm").addEventListener("input", () => {
    $("purge-ok").disabled = compact($("purge-confirm").value) !== dpoNumber;
  });
  closeOnCancel($("purge-dialog"), "purge-cancel");
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved, true);
  else $("token").focus();
}

document.addEventListener("DOMContentLoaded", init);
