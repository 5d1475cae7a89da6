// Vigil's web console: no framework, no build step, nothing fetched from elsewhere.
// Text from messages is data: every value reaches the page through textContent, never as markup.
"use strict";

const API = "/console/api";
const POLL_MS = 2000;
const state = { csrf: "", session: null, reasons: [], poll: null, lastDone: null, workstation: null, lastActivity: 0, locking: false };

// -- the server ------------------------------------------------------------------------------

async function session() {
  const answer = await fetch(`${API}/session`, { credentials: "same-origin" });
  const body = await answer.json();
  state.csrf = body.csrf || "";
  state.reasons = body.break_glass_reasons || state.reasons;
  state.workstation = body.workstation || state.workstation;
  state.session = body.state === "none" ? null : body;
  return body;
}

// One request to the node. A locked session asks for the PIN and then carries on with the same request,
// so the person comes back to the same page and patient; an ended one goes to the sign-in form.
async function api(operation, body = {}, retried = false) {
  const answer = await fetch(`${API}/${operation}`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Vigil-CSRF": state.csrf },
    body: JSON.stringify(body),
  });
  const reply = await answer.json();
  if (answer.ok) return reply;
  const now = await session();
  if (!retried && now.state === "locked") {
    await unlocked(now.why);
    return api(operation, body, true);
  }
  if (now.state !== "active") {
    showLogin(now.why || reply.error);
    throw new Error("signed out");
  }
  const error = new Error(reply.error || `refused (${answer.status})`);
  error.refused = true;
  throw error;
}

// -- small helpers ---------------------------------------------------------------------------

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

function table(headings, rows) {
  const t = el("table");
  const head = el("tr");
  for (const h of headings) head.append(el("th", h));
  t.append(head);
  for (const row of rows) {
    const tr = el("tr");
    for (const cell of row) {
      const td = el("td");
      if (cell instanceof Node) td.append(cell);
      else td.textContent = cell === null || cell === undefined ? "" : String(cell);
      tr.append(td);
    }
    t.append(tr);
  }
  return t;
}

function view(...children) {
  const main = document.getElementById("view");
  main.replaceChildren(...children);
}

function showError(text) {
  const box = document.getElementById("error");
  box.textContent = text;
  box.hidden = !text;
}

function stopPolling() {
  if (state.poll) clearTimeout(state.poll);
  state.poll = null;
}

function when(iso) {
  return iso ? String(iso).replace("T", " ").slice(0, 19) : "";
}

// -- signing in, the lock, break-the-glass ---------------------------------------------------

function showLogin(why) {
  stopPolling();
  state.locking = false; // a lock that ended in a sign-out (three wrong PINs) is over
  showChrome(false);
  const form = el("form", null, { id: "login" });
  const user = el("input", null, { id: "login-user", autocomplete: "username", required: "" });
  const password = el("input", null, { id: "login-password", type: "password", autocomplete: "current-password", required: "" });
  const userLabel = el("label", "User ");
  userLabel.append(user);
  const passwordLabel = el("label", "Password ");
  passwordLabel.append(password);
  form.append(el("h1", "Sign in"), userLabel, passwordLabel, workstationNote(), el("button", "Sign in", { id: "login-go" }));
  if (why) form.append(el("p", why, { class: "muted" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const answer = await fetch(`${API}/login`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user: user.value, password: password.value }),
    });
    const reply = await answer.json();
    if (!answer.ok) {
      showError(reply.error || "sign-in refused");
      return;
    }
    showError("");
    await session();
    route();
  });
  view(form);
}

// The setting (and so how soon an idle session locks) is the workstation's, registered by an administrator.
function workstationNote() {
  const w = state.workstation;
  if (!w) return el("p", "", { id: "workstation" });
  const minutes = Math.round(w.idle_lock_s / 60);
  const place = w.setting.replaceAll("_", " ");
  const text = w.registered
    ? `This workstation: ${w.name || w.device} (${place}); an idle session locks after ${minutes} min.`
    : `This workstation is not registered: sessions here count as ${place} and lock after ${minutes} min idle. ` +
      `An administrator can register it: vigil workstation register ${w.device} --setting SETTING`;
  return el("p", text, { id: "workstation", class: "muted" });
}

function showChrome(signedIn) {
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("lock").hidden = !signedIn;
  document.getElementById("logout").hidden = !signedIn;
  const s = state.session;
  document.getElementById("who").textContent = signedIn && s ? `${s.user} · ${s.setting} · ${s.state}` : "";
}

function unlocked(why) {
  const dialog = document.getElementById("pin-dialog");
  document.getElementById("pin-why").textContent = why || "This workstation locked after being idle.";
  document.getElementById("pin-error").textContent = "";
  const pin = document.getElementById("pin");
  pin.value = "";
  return new Promise((resolve) => {
    const form = document.getElementById("pin-form");
    const submit = async (event) => {
      event.preventDefault();
      const answer = await fetch(`${API}/unlock`, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-Vigil-CSRF": state.csrf },
        body: JSON.stringify({ pin: pin.value }),
      });
      const reply = await answer.json();
      if (!answer.ok) {
        const now = await session();
        if (now.state !== "locked") {
          form.removeEventListener("submit", submit);
          dialog.close();
          showLogin(reply.error);
          return;
        }
        document.getElementById("pin-error").textContent = reply.error || "wrong PIN";
        return;
      }
      form.removeEventListener("submit", submit);
      dialog.close();
      await session();
      showChrome(true);
      resolve();
    };
    form.addEventListener("submit", submit);
    if (!dialog.open) dialog.showModal();
  });
}

function breakGlass(patient) {
  const dialog = document.getElementById("glass-dialog");
  const select = document.getElementById("glass-reason");
  select.replaceChildren(...state.reasons.map((r) => el("option", r.replaceAll("_", " "), { value: r })));
  document.getElementById("glass-error").textContent = "";
  return new Promise((resolve) => {
    const form = document.getElementById("glass-form");
    const cancel = document.getElementById("glass-cancel");
    const done = (granted) => {
      form.removeEventListener("submit", submit);
      cancel.removeEventListener("click", cancelled);
      dialog.close();
      resolve(granted);
    };
    const cancelled = () => done(false);
    const submit = async (event) => {
      event.preventDefault();
      try {
        await api("break_glass", {
          patient,
          reason: select.value,
          note: document.getElementById("glass-note").value,
          secret: document.getElementById("glass-secret").value,
        });
        done(true);
      } catch (error) {
        document.getElementById("glass-error").textContent = error.message;
      }
    };
    form.addEventListener("submit", submit);
    cancel.addEventListener("click", cancelled);
    dialog.showModal();
  });
}

// -- the views ---------------------------------------------------------------------------------

async function showStatus() {
  stopPolling();
  const tick = async () => {
    try {
      // passive: a screen refreshing itself is not the person at it, so it does not keep the session from locking
      const status = await api("status", { passive: true });
      renderStatus(status);
      showError("");
    } catch (error) {
      if (error.refused) showError(error.message);
      if (!error.refused) return;
    }
    if (location.hash.startsWith("#/status")) state.poll = setTimeout(tick, POLL_MS);
  };
  await tick();
}

function renderStatus(status) {
  const now = performance.now();
  const done = Object.fromEntries(status.lanes.map((l) => [l.lane, l.done]));
  const rates = {};
  if (state.lastDone) {
    const seconds = (now - state.lastDone.at) / 1000;
    for (const lane of Object.keys(done)) rates[lane] = ((done[lane] - (state.lastDone.done[lane] || 0)) / seconds).toFixed(1);
  }
  state.lastDone = { at: now, done };
  const lanes = table(
    ["lane", "waiting", "bound", "running", "done", "per second", "wait p99 (ms)", "receive to done p99 (ms)"],
    status.lanes.map((l) => [l.lane, l.depth, l.capacity, l.running, l.done, rates[l.lane] ?? "…", (l.wait_p99_us / 1000).toFixed(1), (l.total_p99_us / 1000).toFixed(1)]),
  );
  lanes.id = "lanes";
  const sources = table(["source", "state"], Object.entries(status.sources));
  const tree = table(
    ["part", "state", "restarts", "last error"],
    status.supervision.map((c) => [c.name, c.state, c.restarts, c.last_error || ""]),
  );
  const routes = table(
    ["route", "destination", "state", "backlog", "delivered"],
    status.routes.map((r) => [r.name, r.destination, r.state, r.lanes.reduce((n, l) => n + l.backlog, 0), r.delivered]),
  );
  const waiting = table(["quarantine, open", "count"], Object.entries(status.quarantine_open_by_age || {}));
  const cluster = status.cluster === "off" ? el("p", "single node (no cluster)", { class: "muted" }) : clusterView(status.cluster);
  view(
    el("h1", `Node ${status.node}`),
    el("p", `log at LSN ${status.wal.last_lsn} · up ${Math.round(status.uptime_s)} s · ${status.in_flight} in flight`),
    el("h2", "Alerts"), alertsView(status.alerts),
    el("h2", "Lanes"), lanes,
    el("h2", "Sources"), sources,
    el("h2", "Routes"), routes,
    el("h2", "Quarantine"), waiting,
    el("h2", "Cluster"), cluster,
    el("h2", "Supervision"), tree,
  );
}

// What holds now of the alert rules ([alerts]): the same as `vigil status` and /metrics.
function alertsView(alerts) {
  if (!alerts || typeof alerts !== "object") return el("p", `alerts: ${alerts || "off"}`, { class: "muted" });
  if (!alerts.active.length) return el("p", `none active (${alerts.raised_total} raised since the node started)`, { class: "muted", id: "alerts" });
  const list = table(
    ["rule", "subject", "detail", "since (UTC)"],
    alerts.active.map((a) => [a.rule, a.subject, a.detail, when(new Date(a.since_us / 1000).toISOString())]),
  );
  list.id = "alerts";
  list.classList.add("critical");
  return list;
}

// The cluster as this node sees it: NATS, the members, and each partition's owner and epoch.
function clusterView(c) {
  const here = new Set(c.serving);
  const taking = new Set(c.taking_over);
  const partitions = table(
    ["partition", "owner", "epoch", "here"],
    c.owners.map(([p, owner, epoch]) => [p, owner || "(none: being taken over)", epoch, here.has(p) ? "serving" : taking.has(p) ? "taking over" : ""]),
  );
  partitions.id = "partitions";
  const summary = `NATS ${c.nats} · members ${c.members.join(", ")} · this node serves ${c.serving.length} of ${c.partitions} · ` +
    `replication lag ${c.replication_lag_records} records · ${c.takeovers} takeovers · ${c.forwarded_messages} forwarded · ${c.fenced} fenced`;
  const box = el("div");
  box.append(el("p", summary), partitions);
  return box;
}

async function showQuarantine() {
  stopPolling();
  const items = await api("quarantine_list");
  const rows = items.map((item) => {
    const actions = el("span");
    if (item.open) {
      const retry = el("button", "Retry");
      retry.addEventListener("click", async () => {
        try {
          const answer = await api("quarantine_act", { action: "retry", qid: item.qid, note: "retried from the console" });
          showError(`item ${item.qid}: ${answer.outcome}`);
        } catch (error) {
          showError(error.message);
        }
        showQuarantine();
      });
      actions.append(retry);
    }
    return [item.qid, when(item.at), item.sender, item.message_type, item.control_id, item.source, item.reason, item.open ? "open" : item.resolved, actions];
  });
  view(el("h1", `Quarantine: ${items.filter((i) => i.open).length} open`), table(["id", "at (UTC)", "sender", "type", "control id", "source", "reason", "status", ""], rows));
}

async function showPatient(key, params) {
  stopPolling();
  const asOf = params.get("as_of") || "";
  const knownAt = params.get("known_at") || "";
  let record;
  try {
    record = await api("patient", { key, ...(asOf ? { as_of: asOf } : {}), ...(knownAt ? { known_at: knownAt } : {}) });
  } catch (error) {
    if (!error.refused) return;
    const offer = el("button", "Break the glass", { id: "glass-open" });
    offer.addEventListener("click", async () => {
      if (await breakGlass(key)) showPatient(key, params);
    });
    view(el("h1", "Record"), el("p", error.message, { class: "banner" }), offer);
    return;
  }
  // The time control: the record as it stood at a clinical moment, and as Vigil knew it at a moment.
  const moment = el("form", null, { id: "moment" });
  const asOfInput = el("input", null, { id: "as-of", placeholder: "2026-12-01T08:00", value: asOf });
  const knownInput = el("input", null, { id: "known-at", placeholder: "2026-12-01T08:00", value: knownAt });
  const asOfLabel = el("label", "As of ");
  asOfLabel.append(asOfInput);
  const knownLabel = el("label", "As known at ");
  knownLabel.append(knownInput);
  moment.append(asOfLabel, knownLabel, el("button", "Show"), el("a", "Who looked at this record", { href: `#/accesses/${encodeURIComponent(key)}` }));
  moment.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    if (asOfInput.value) query.set("as_of", asOfInput.value);
    if (knownInput.value) query.set("known_at", knownInput.value);
    const text = query.toString();
    location.hash = `#/patient/${encodeURIComponent(key)}${text ? `?${text}` : ""}`;
  });
  const d = record.demographics || {};
  const name = [d.family, ...(d.given || [])].filter(Boolean).join(", ");
  const results = table(
    ["test", "value", "units", "range", "flags", "status", "time", "versions", ""],
    record.results.map((r) => {
      const flags = el("span", (r.current.abnormal_flags || []).join(" "));
      if ((r.current.abnormal_flags || []).some((f) => f === "HH" || f === "LL" || f === "AA")) flags.className = "critical";
      const critical = (r.current.abnormal_flags || []).some((f) => f === "HH" || f === "LL" || f === "AA");
      const ack = el("span");
      if (r.acknowledged) ack.textContent = `acknowledged by ${r.acknowledged.by}`;
      else if (critical && !asOf && !knownAt) {
        const button = el("button", "Acknowledge");
        button.addEventListener("click", () => acknowledge(key, r.result_key).then(() => showPatient(key, params)));
        ack.append(button);
      }
      // Every version, oldest first: a corrected result shows what it said before.
      // A version is [lsn, recorded_at, effective_at, message_id, source_patient, event].
      const versions = r.versions.map((v) => `${v[5].value} ${v[5].status} (known ${when(v[1])})`).join(" → ");
      return [r.current.code.text || r.current.code.code, r.current.value, r.current.units, r.current.reference_range, flags, r.current.status, when(r.effective_at), versions, ack];
    }),
  );
  results.id = "results";
  view(
    el("h1", name || record.patient, { id: "patient-name" }),
    el("p", `${record.patient} · born ${d.birth_date || "?"} · ${d.sex || ""}${asOf ? ` · as of ${asOf}` : ""}`, { class: "muted" }),
    moment,
    el("h2", "Results"), results,
    el("h2", "Encounters"), table(["visit", "status", "class", "location", "admitted", "discharged"], record.encounters.map((e) => [e.encounter_id, e.status, e.patient_class, e.location, when(e.admitted_at), when(e.discharged_at)])),
    el("h2", "Medications"), table(["order", "status", "events"], record.medications.map((m) => [m.order_id, m.status, m.events.length])),
    el("h2", "Allergies"), table(["allergen", "severity", "reactions"], record.allergies.map((a) => [a.allergen.text || a.allergen.code, a.severity, (a.reactions || []).join(", ")])),
  );
}

async function showWorklist() {
  stopPolling();
  const items = await api("worklist");
  const rows = items.map((item) => {
    const open = el("a", item.patient, { href: `#/patient/${encodeURIComponent(item.patient)}` });
    const ack = el("span");
    if (!item.acknowledged) {
      const button = el("button", "Acknowledge");
      button.addEventListener("click", () => acknowledge(item.patient, item.result_key).then(showWorklist));
      ack.append(button);
    } else {
      ack.textContent = `${item.acknowledged_by} ${when(item.acknowledged_at)}`;
    }
    const flags = el("span", (item.abnormal_flags || []).join(" "), { class: "critical" });
    return [when(item.opened_at), open, item.code_text || item.code, `${item.value} ${item.units}`.trim(), flags, item.status, ack];
  });
  const list = table(["opened", "patient", "result", "value", "flags", "status", ""], rows);
  list.id = "worklist";
  view(el("h1", `Critical results: ${items.filter((i) => !i.acknowledged).length} open`), list);
}

async function acknowledge(patient, resultKey) {
  try {
    const id = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
    await api("acknowledge", { patient, result_key: resultKey, request_id: id, note: "acknowledged in the console" });
    showError("");
  } catch (error) {
    if (error.refused) showError(error.message);
  }
}

async function showReviews() {
  stopPolling();
  const reviews = await api("reviews");
  const rows = reviews.map((r) => {
    const close = el("span");
    for (const outcome of ["appropriate", "inappropriate"]) {
      const button = el("button", outcome);
      button.addEventListener("click", async () => {
        try {
          await api("review_close", { review: r.id, outcome, note: "reviewed in the console" });
        } catch (error) {
          if (error.refused) showError(error.message);
        }
        showReviews();
      });
      close.append(button);
    }
    const who = el("a", r.patient, { href: `#/accesses/${encodeURIComponent(r.patient)}` });
    return [when(new Date(r.opened_at * 1000).toISOString()), r.user, who, r.reason, r.note, close];
  });
  const list = table(["opened", "user", "patient", "reason", "note", "close as"], rows);
  list.id = "reviews";
  view(el("h1", `Break-the-glass reviews: ${reviews.length} open`), list);
}

async function showAccesses(patient) {
  stopPolling();
  const events = await api("record_accesses", { patient });
  const rows = events.map((e) => [when(e.at), e.user, e.role, e.setting, e.device, e.action, e.outcome, [e.reason, e.detail].filter(Boolean).join(" ")]);
  const list = table(["when", "user", "role", "setting", "device", "what", "outcome", "why"], rows);
  list.id = "accesses";
  view(el("h1", `Who looked at ${patient}`), list);
}

// -- routing: the hash is the page, so a resumed session comes back to it ----------------------

async function route() {
  showError("");
  if (!state.session || state.session.state === "ended") {
    showLogin();
    return;
  }
  if (state.session.state === "locked") {
    await unlocked(state.session.why);
  }
  showChrome(true);
  const [path, query] = (location.hash || "#/status").slice(1).split("?");
  const params = new URLSearchParams(query || "");
  try {
    if (path.startsWith("/patient/")) await showPatient(decodeURIComponent(path.slice("/patient/".length)), params);
    else if (path.startsWith("/accesses/")) await showAccesses(decodeURIComponent(path.slice("/accesses/".length)));
    else if (path === "/quarantine") await showQuarantine();
    else if (path === "/worklist") await showWorklist();
    else if (path === "/reviews") await showReviews();
    else await showStatus();
  } catch (error) {
    if (error.refused) showError(error.message);
  }
}

// -- the idle lock on the screen ---------------------------------------------------------------
// The node locks an idle session, but only a request finds that out: a record left open would stay
// on an unattended screen. The page locks itself at the setting's idle time (counting only what a
// person does, never the status poll), takes the record off the screen, and tells the node.

const ACTIVITY = ["keydown", "pointerdown", "wheel", "touchstart"];

function noteActivity() {
  state.lastActivity = Date.now();
}

async function lockNow(why) {
  if (state.locking) return;
  state.locking = true;
  try {
    stopPolling();
    view(el("p", "Locked.", { class: "muted", id: "locked" })); // nothing of a record stays on the screen
    await fetch(`${API}/lock`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Vigil-CSRF": state.csrf },
      body: "{}",
    }); // already locked by the node: the same
    await session();
    await unlocked(why);
  } finally {
    state.locking = false;
    noteActivity();
  }
  route();
}

function watchIdle() {
  const s = state.session;
  if (!s || s.state !== "active" || !s.idle_lock_s || state.locking) return;
  if (Date.now() - state.lastActivity >= s.idle_lock_s * 1000) lockNow("This workstation locked after being idle.");
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("find").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = document.getElementById("find-key").value.trim();
    if (key) location.hash = `#/patient/${encodeURIComponent(key)}`;
  });
  document.getElementById("lock").addEventListener("click", () => lockNow("Locked. Enter your PIN to resume where you were."));
  for (const kind of ACTIVITY) window.addEventListener(kind, noteActivity, { passive: true, capture: true });
  noteActivity();
  setInterval(watchIdle, 1000);
  document.getElementById("logout").addEventListener("click", async () => {
    await api("logout");
    state.session = null;
    showLogin("Signed out.");
  });
  await session();
  route();
});
