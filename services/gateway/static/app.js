// The i2v page: log in with an API key (traded for a session cookie), upload, generate, follow
// progress over SSE, and keep a grid of results. Plain JS, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
// Share of the bar each stage fills; mirrors services/gateway/progress.py.
const WEIGHTS = { ingest: 5, billing: 5, latent: 70, decode: 15, mux: 5 };
const STATUS_OF_STAGE = { ingest: "preprocessing", billing: "preprocessing", latent: "generating",
  decode: "decoding", mux: "muxing" };
const TERMINAL = new Set(["JobCompleted", "JobFailed", "JobRejected", "JobCancelled"]);
const FINISHED = new Set(["succeeded", "failed", "cancelled", "rejected"]);
const REPLAYABLE = new Set(["failed", "cancelled", "rejected"]);
const PIPELINE = ["ingest", "billing", "latent", "decode", "mux"];
const MOTION_MARKS = [[1, "still"], [64, "subtle"], [127, "medium"], [191, "lively"], [255, "intense"]];
const ACCEPTED = ["image/jpeg", "image/png", "image/webp"];

const state = { file: null, previewUrl: null, current: null, streams: new Map(), cursor: null, suggestion: null };

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 204) return null;
  const body = await response.json().catch(() => ({}));
  if (response.status === 401 && !$("app").hidden) {
    // The session ended (expired, revoked, or logged out elsewhere): back to the login form.
    signedOut("Your session has ended: log in again.");
  }
  if (!response.ok) {
    const err = new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    err.status = response.status;
    err.code = body.error && body.error.code;
    throw err;
  }
  return body;
}

// --- login ---------------------------------------------------------------------------------------

async function start() {
  try {
    await refreshAccount();
    showApp();
  } catch (err) {
    if (err.status === 401) showLogin(); else showLogin(err.message);
  }
}

function showLogin(message = "") {
  $("app").hidden = true;
  $("account").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("api-key").focus();
}

async function showApp() {
  $("form-error").textContent = "";
  $("login").hidden = true;
  $("app").hidden = false;
  $("account").hidden = false;
  await loadSizes();
  restoreSettings();
  updatePrice();
  await loadHistory(true);
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const key = $("api-key").value.trim();
  $("login-error").textContent = "";
  try {
    await api("/v1/session", { method: "POST", headers: { Authorization: `Bearer ${key}` } });
    $("api-key").value = "";
    await refreshAccount();
    await showApp();
  } catch (err) {
    $("login-error").textContent = err.message;
  }
});

$("logout").addEventListener("click", async () => {
  await api("/v1/session", { method: "DELETE" }).catch(() => null);
  signedOut();
});

// Forget everything of the account that was logged in: its streams, cards, progress panel and errors.
function signedOut(message = "") {
  for (const source of state.streams.values()) source.close();
  state.streams.clear();
  state.current = null;
  state.cursor = null;
  $("grid").replaceChildren();
  $("progress").hidden = true;
  $("form-error").textContent = "";
  $("balance").textContent = "–";
  $("account-name").textContent = "";
  showLogin(message);
}

async function refreshAccount() {
  const account = await api("/v1/account");
  $("account-name").textContent = account.name;
  $("balance").textContent = account.balance;
  return account;
}

// --- the image -----------------------------------------------------------------------------------

const drop = $("drop");
drop.addEventListener("click", () => $("image").click());
drop.addEventListener("keydown", (e) => {
  if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("image").click(); }
});
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
for (const type of ["dragleave", "drop"]) {
  drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.remove("over"); });
}
drop.addEventListener("drop", (e) => { if (e.dataTransfer.files.length) chooseFile(e.dataTransfer.files[0]); });
$("image").addEventListener("change", (e) => { if (e.target.files.length) chooseFile(e.target.files[0]); });
$("remove-image").addEventListener("click", () => { clearFile(); drop.focus(); });

function chooseFile(file) {
  $("form-error").textContent = "";
  if (!ACCEPTED.includes(file.type)) {
    $("form-error").textContent = `${file.name}: choose a JPG, PNG or WebP picture`;
    return;
  }
  if (file.size > 25 * 1024 * 1024) {
    $("form-error").textContent = `${file.name} is over 25 MB`;
    return;
  }
  clearFile();
  state.file = file;
  state.previewUrl = URL.createObjectURL(file);
  $("preview-img").src = state.previewUrl;
  $("preview-name").textContent = `${file.name} · ${formatBytes(file.size)}`;
  $("preview").hidden = false;
  $("drop-empty").hidden = true;
  $("remove-image").hidden = false;
  suggestFor(file);
}

// --- presets and suggestions ---------------------------------------------------------------------

// Ask the server what the picture calls for; it answers a preset, its parameters and a reason for each.
async function askSuggestion(file, preset) {
  const form = new FormData();
  form.append("image", file);
  form.append("preset", preset);
  return api("/v1/suggest", { method: "POST", body: form });
}

async function suggestFor(file) {
  $("suggestion").hidden = true;
  if ($("preset").value) {  // a preset chosen before the picture: fill its values for this one
    askSuggestion(file, $("preset").value).then((s) => { if (state.file === file) applyParams(s.params); })
      .catch((err) => { $("form-error").textContent = err.message; });
  }
  try {
    const suggestion = await askSuggestion(file, "auto");
    if (state.file !== file) return;  // another picture was chosen meanwhile
    state.suggestion = suggestion;
    $("suggestion-title").textContent = `Suggested: ${suggestion.preset}`;
    const reasons = Object.entries(suggestion.reasons).map(([name, why]) => {
      const li = document.createElement("li");
      li.textContent = name === "preset" ? why : `${name.replaceAll("_", " ")}: ${why}`;
      return li;
    });
    $("suggestion-reasons").replaceChildren(...reasons);
    $("suggestion").hidden = false;
  } catch (err) { /* a suggestion is a help, not a step: the form works without it */ }
}

$("use-suggestion").addEventListener("click", () => {
  if (!state.suggestion) return;
  $("preset").value = state.suggestion.preset;
  applyParams(state.suggestion.params);
});

$("preset").addEventListener("change", async () => {
  const preset = $("preset").value;
  $("form-error").textContent = "";
  if (!preset || !state.file) return;  // with no picture yet, the server applies it on submit
  try {
    applyParams((await askSuggestion(state.file, preset)).params);
  } catch (err) {
    $("form-error").textContent = err.message;
  }
});

// Put a preset's values into the form: what is sent is what the user sees, and later edits win.
function applyParams(params) {
  for (const [name, value] of Object.entries(params)) {
    if (name === "duration" || name === "fps" || name === "loop") setChoice(name, String(value));
    else if (name === "stabilize") $("stabilize").checked = Boolean(value);
    else if (name === "resolution") setSize(value);
    else {
      const input = document.querySelector(`#job-form [name=${name}]`);
      if (input) input.value = String(value);
    }
  }
  $("motion").dispatchEvent(new Event("input"));
  $("aug").dispatchEvent(new Event("input"));
  updatePrice();
  saveSettings();
}

// Select a segmented option, adding it when a preset chose a value the buttons do not offer.
function setChoice(name, value) {
  let input = document.querySelector(`input[name=${name}][value="${value}"]`);
  if (!input) {
    const group = document.querySelector(`input[name=${name}]`).closest(".segmented");
    input = document.createElement("input");
    Object.assign(input, { type: "radio", name, value, id: `${name}-${value}` });
    const label = document.createElement("label");
    label.htmlFor = input.id;
    label.textContent = name === "duration" ? `${value} s` : value;
    input.addEventListener("change", () => { updatePrice(); saveSettings(); });
    group.append(input, label);
  }
  input.checked = true;
}

// --- sizes ---------------------------------------------------------------------------------------

// The server's model's sizes (GET /v1/models): its own, turned, and a square of about its area.
async function loadSizes() {
  let models = [];
  try { models = (await api("/v1/models")).models; } catch (err) { return; /* auto stays the only size */ }
  const model = models.find((m) => m.default) || models[0];
  if (!model) return;
  const options = model.sizes.map((size) => {
    const option = document.createElement("option");
    option.value = size.resolution;
    option.textContent = `${size.label} · ${size.resolution.replace("x", "×")}`;
    return option;
  });
  $("resolution").replaceChildren($("resolution").options[0], ...options);
}

// Select a size, given as "WxH", {width, height} (a job's parameters) or nothing (auto); a size the
// presets lack gets an option of its own, as a preset's duration gets a button.
function setSize(value) {
  const text = !value ? "" : typeof value === "string" ? value : `${value.width}x${value.height}`;
  if (text && ![...$("resolution").options].some((o) => o.value === text)) {
    const option = document.createElement("option");
    option.value = text;
    option.textContent = text.replace("x", "×");
    $("resolution").append(option);
  }
  $("resolution").value = text;
}

// --- settings kept across reloads ----------------------------------------------------------------

const SETTINGS_KEY = "i2v.settings";
const KEPT = ["duration", "fps", "loop", "motion_bucket_id", "motion_prompt", "augmentation_level", "steps",
  "cfg_scale", "min_cfg", "format", "quality", "interpolator", "preset", "resolution"];

function saveSettings() {
  const kept = {};
  for (const name of KEPT) {
    const input = document.querySelector(`#job-form [name=${name}]:checked, #job-form [name=${name}]:not([type=radio])`);
    if (input) kept[name] = input.value;
  }
  kept.stabilize = $("stabilize").checked;
  try { localStorage.setItem(SETTINGS_KEY, JSON.stringify(kept)); } catch (err) { /* private mode */ }
}

function restoreSettings() {
  let kept = null;
  try { kept = JSON.parse(localStorage.getItem(SETTINGS_KEY) || "null"); } catch (err) { kept = null; }
  if (!kept || typeof kept !== "object") return;
  const { preset, ...params } = kept;
  applyParams(params);
  if (typeof preset === "string" && [...$("preset").options].some((o) => o.value === preset)) $("preset").value = preset;
}
$("job-form").addEventListener("change", saveSettings);
$("job-form").addEventListener("input", saveSettings);
// An error about the form goes once the user changes the form; the next submit says if it still holds.
for (const type of ["input", "change"]) {
  $("job-form").addEventListener(type, (e) => {
    if (e.target.id !== "image") $("form-error").textContent = "";  // the picture's own check speaks for it
  });
}

function clearFile() {
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.file = null;
  state.previewUrl = null;
  $("image").value = "";
  $("preview").hidden = true;
  $("preview-img").removeAttribute("src");
  $("drop-empty").hidden = false;
  $("remove-image").hidden = true;
  $("suggestion").hidden = true;
  state.suggestion = null;
}

// --- parameters and price ------------------------------------------------------------------------

function motionName(value) {
  let name = MOTION_MARKS[0][1];
  for (const [at, label] of MOTION_MARKS) if (value >= at - 32) name = label;
  return name;
}

$("motion").addEventListener("input", () => {
  const v = Number($("motion").value);
  $("motion-out").textContent = `${v} · ${motionName(v)}`;
});
$("aug").addEventListener("input", () => { $("aug-out").textContent = Number($("aug").value).toFixed(2); });
$("random-seed").addEventListener("click", () => {
  const buf = new Uint32Array(1);
  crypto.getRandomValues(buf);
  $("seed").value = String(buf[0]);
});
for (const input of document.querySelectorAll("input[name=duration], input[name=fps]")) {
  input.addEventListener("change", updatePrice);
}
$("steps").addEventListener("input", updatePrice);
$("resolution").addEventListener("change", updatePrice);
$("variations").addEventListener("input", updatePrice);

/** How many jobs one submit makes (the form's Variations, 1-4): each is priced and charged. */
function variations() { return Math.min(4, Math.max(1, Math.trunc(Number($("variations").value)) || 1)); }

function chosen(name) { return document.querySelector(`input[name=${name}]:checked`).value; }

let priceRequest = 0;
async function updatePrice() {
  const ticket = ++priceRequest;
  try {
    // The server prices the work (pixels x frames x steps); the button shows its answer, never its own sum.
    const query = new URLSearchParams({ duration: chosen("duration"), fps: chosen("fps"), steps: $("steps").value });
    if ($("resolution").value) query.set("resolution", $("resolution").value);
    const quote = await api(`/v1/quote?${query}`);
    if (ticket === priceRequest) $("price").textContent = quote.price * variations();
  } catch (err) { /* the button keeps the last price */ }
}

// --- submitting and following --------------------------------------------------------------------

$("job-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("form-error").textContent = "";
  if (!state.file) {
    $("form-error").textContent = "Choose a picture first.";
    drop.focus();
    return;
  }
  const form = new FormData();
  form.append("image", state.file);
  form.append("duration", chosen("duration"));
  form.append("fps", chosen("fps"));
  form.append("motion_bucket_id", $("motion").value);
  form.append("motion_prompt", $("motion-prompt").value);
  form.append("augmentation_level", $("aug").value);
  form.append("steps", $("steps").value);
  form.append("cfg_scale", $("cfg").value);
  form.append("seed", $("seed").value || "-1");
  form.append("min_cfg", $("min-cfg").value);
  form.append("loop", chosen("loop"));
  form.append("format", $("format").value);
  form.append("quality", $("quality").value);
  form.append("interpolator", $("interpolator").value);
  form.append("stabilize", $("stabilize").checked ? "true" : "false");
  if ($("resolution").value) form.append("resolution", $("resolution").value);
  if ($("preset").value) form.append("preset", $("preset").value);
  if (variations() > 1) form.append("variations", String(variations()));
  $("generate").disabled = true;
  try {
    const answer = await api("/v1/jobs", { method: "POST", body: form });
    const jobs = answer.batch ? answer.batch.jobs : [answer];  // a batch's jobs in seed order
    const job = jobs[0];
    state.current = job.id;
    showProgress(job);
    for (const each of [...jobs].reverse()) {  // prepended: the first seed ends up first
      upsertCard(each, true);
      follow(each);
    }
    refreshAccount().catch(() => null);
  } catch (err) {
    $("form-error").textContent = err.message;
  } finally {
    $("generate").disabled = false;
  }
});

$("cancel").addEventListener("click", async () => {
  if (state.current) await cancelJob(state.current);
});

async function cancelJob(id) {
  try {
    await api(`/v1/jobs/${id}/cancel`, { method: "POST" });
  } catch (err) {
    $("form-error").textContent = err.message;
  }
}

// A finished video goes on from its last frame for the form's duration, as a new job (its card first);
// the server keeps the parent's fps, size and format, and the parent's other settings.
async function extendJob(id) {
  $("form-error").textContent = "";
  try {
    const job = await api(`/v1/jobs/${id}/extend`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ duration: Number(chosen("duration")) }),
    });
    upsertCard(job, true);
    state.current = job.id;
    showProgress(job);
    follow(job);
    refreshAccount().catch(() => null);
  } catch (err) {
    $("form-error").textContent = err.message;
  }
}

// The form takes a job's parameters and seed: the same video again, or a start for changes.
function useSettings(job) {
  applyParams({ ...job.parameters, seed: job.seed });
  $("preset").value = "";  // the values are the job's own now, whatever preset chose them
  saveSettings();
  $("job-form").scrollIntoView({ behavior: "smooth", block: "start" });
  $("form-error").textContent = "";
}

// A failed or cancelled job runs again from where it stopped, as a new generation; follow that one.
async function replayJob(id) {
  $("form-error").textContent = "";
  try {
    const job = await api(`/v1/jobs/${id}/replay`, { method: "POST" });
    upsertCard(job);
    state.current = job.id;
    showProgress(job);
    follow(job);
    refreshAccount().catch(() => null);
  } catch (err) {
    $("form-error").textContent = err.message;
  }
}

function progressOf(view) {
  if (view.status === "succeeded") return 100;
  let done = 0;
  for (const stage of Object.keys(view.timings)) done += WEIGHTS[stage] || 0;
  let current = 0;
  if (view.stage && !(view.stage in view.timings) && view.total > 0) {
    current = WEIGHTS[view.stage] * Math.min(view.step, view.total) / view.total;
  }
  return Math.min(99, Math.floor(done + current));
}

// Mirrors JobView.apply: events of an older generation change nothing; a replay starts a new one,
// keeping the timings of the stages before the one it reruns from.
function fold(view, type, data) {
  if (data.generation < view.generation) return;
  if (type === "ReplayRequested") {
    const kept = PIPELINE.slice(0, PIPELINE.indexOf(data.stage));
    view.timings = Object.fromEntries(Object.entries(view.timings).filter(([stage]) => kept.includes(stage)));
    view.generation = data.generation;
    view.status = "queued"; view.stage = null; view.step = 0; view.total = 0;
    view.progress = progressOf(view);
    return;
  }
  if (data.generation > view.generation) {
    view.generation = data.generation; view.timings = {}; view.status = "queued";
  }
  if (type === "StageStarted") {
    view.stage = data.stage; view.step = 0; view.total = 0;
    delete view.timings[data.stage];
    view.status = STATUS_OF_STAGE[data.stage] || view.status;
  } else if (type === "StageProgress" && data.stage === view.stage) {
    view.step = data.step; view.total = data.total;
  } else if (type === "StageFinished") {
    view.timings[data.stage] = data.seconds;
  } else if (type === "JobCompleted") view.status = "succeeded";
  else if (type === "JobFailed") view.status = "failed";
  else if (type === "JobRejected") view.status = "rejected";
  else if (type === "JobCancelled") view.status = "cancelled";
  view.progress = progressOf(view);
}

function follow(job) {
  if (state.streams.has(job.id)) return;
  const view = { ...job, generation: job.generation || 0, timings: { ...job.timings } };
  const source = new EventSource(job.links.events);
  state.streams.set(job.id, source);
  const types = ["StageStarted", "StageProgress", "StageFinished", "CancelRequested", "ReplayRequested", ...TERMINAL];
  for (const type of types) {
    source.addEventListener(type, async (e) => {
      const data = JSON.parse(e.data);
      fold(view, type, data);
      // Billing has reserved the price: the balance shows it now, not when the job ends.
      if (type === "StageFinished" && data.stage === "billing") refreshAccount().catch(() => null);
      if (state.current === job.id) showProgress(view);
      updateCardProgress(view);
      // Only the current generation's end is the job's end: a replay may follow an older one.
      if (TERMINAL.has(type) && data.generation >= view.generation) {
        source.close();
        state.streams.delete(job.id);
        const fresh = await waitForStatus(job.id, view.generation);
        upsertCard(fresh);
        if (state.current === job.id) finishProgress(fresh);
        refreshAccount().catch(() => null);
      }
    });
  }
  source.addEventListener("StagePreview", (e) => {
    const data = JSON.parse(e.data);
    if (data.generation >= view.generation) showPreview(job.id, data.url);
  });
}

// A live preview of the denoising stands in the card's dark box until the video replaces it.
function showPreview(id, url) {
  const card = cardOf(id);
  if (!card || card.querySelector(".media video, .media img:not(.preview)")) return;
  const media = card.querySelector(".media");
  let img = media.querySelector("img.preview");
  if (!img) {
    img = document.createElement("img");
    img.className = "preview";
    img.alt = "Preview of the video being made";
    media.replaceChildren(img);
  }
  img.src = url;
}

// The index folds events a moment after they are sent; ask until it shows this generation's outcome.
async function waitForStatus(id, generation) {
  const ended = (job) => FINISHED.has(job.status) && job.generation >= generation;
  let job = await api(`/v1/jobs/${id}`);
  for (let i = 0; i < 20 && !ended(job); i++) {
    await new Promise((r) => setTimeout(r, 150));
    job = await api(`/v1/jobs/${id}`);
  }
  return job;
}

function showProgress(view) {
  $("progress").hidden = false;
  const step = view.total ? ` (step ${view.step}/${view.total})` : "";
  $("progress-title").textContent = "Working on it";
  $("progress-stage").textContent = `${view.status}${view.stage === "latent" ? step : ""}`;
  $("progress-pct").textContent = `${view.progress}%`;
  $("progress-bar").value = view.progress;
  $("cancel").hidden = FINISHED.has(view.status);
  if (!FINISHED.has(view.status)) refreshWait(view.id);
}

function finishProgress(job) {
  showProgress(job);
  $("progress-wait").hidden = true;
  const words = { succeeded: "Done", failed: "Failed", cancelled: "Cancelled", rejected: "Refused" };
  $("progress-title").textContent = words[job.status] || "Finished";
  if (job.error && job.status !== "cancelled") $("form-error").textContent = job.error.message;
  state.current = null;
}

// "3rd in line · about 40 s": the job resource's queue_position and eta_s, read at most every 2 s while the
// job is the one in the panel, whether events come in or it waits in line (then no events come).
const waitReads = new Map();  // job id -> when it was last read
let waitTimer = null;
async function refreshWait(id) {
  if (Date.now() - (waitReads.get(id) || 0) < 2000) return;
  waitReads.set(id, Date.now());
  let job = null;
  try { job = await api(`/v1/jobs/${id}`); } catch (err) { /* the line stays as it was */ }
  if (state.current !== id || (job && FINISHED.has(job.status))) return;
  if (job) {
    const parts = [];
    if (job.queue_position != null) parts.push(`${ordinal(job.queue_position + 1)} in line`);
    if (job.eta_s != null) parts.push(`about ${Math.round(job.eta_s)} s`);
    $("progress-wait").textContent = parts.join(" · ");
    $("progress-wait").hidden = parts.length === 0;
  }
  clearTimeout(waitTimer);
  waitTimer = setTimeout(() => refreshWait(id), 2000);
}

function ordinal(n) {
  const suffix = n % 100 >= 10 && n % 100 <= 20 ? "th" : { 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th";
  return `${n}${suffix}`;
}

// --- results grid --------------------------------------------------------------------------------

async function loadHistory(reset) {
  if (reset) { state.cursor = null; $("grid").replaceChildren(); }
  const query = state.cursor ? `?limit=12&cursor=${state.cursor}` : "?limit=12";
  const page = await api(`/v1/jobs${query}`);
  for (const job of page.items) {
    upsertCard(job);
    if (!FINISHED.has(job.status)) {
      follow(job);
      if (!state.current) { state.current = job.id; showProgress(job); }
    }
  }
  state.cursor = page.next_cursor;
  $("more").hidden = !state.cursor;
  $("empty").hidden = $("grid").children.length > 0;
}
$("more").addEventListener("click", () => loadHistory(false));

function cardOf(id) { return document.querySelector(`.item[data-id="${id}"]`); }

function upsertCard(job, first = false) {
  let card = cardOf(job.id);
  if (!card) {
    card = $("card-tpl").content.firstElementChild.cloneNode(true);
    card.dataset.id = job.id;
    if (first) $("grid").prepend(card); else $("grid").append(card);
    card.querySelector(".enlarge").addEventListener("click", () => enlarge(card.dataset.id));
    card.querySelector(".delete").addEventListener("click", () => deleteJob(card.dataset.id));
    card.querySelector(".cancel-job").addEventListener("click", () => cancelJob(card.dataset.id));
    card.querySelector(".replay-job").addEventListener("click", () => replayJob(card.dataset.id));
    card.querySelector(".extend-job").addEventListener("click", () => extendJob(card.dataset.id));
    card.querySelector(".reuse").addEventListener("click", () => useSettings(card.job));
  }
  card.job = job;
  $("empty").hidden = true;
  const media = card.querySelector(".media");
  const status = card.querySelector(".status");
  status.textContent = job.status;
  status.className = `status ${job.status}`;
  const p = job.parameters;
  const done = job.status === "succeeded";
  const size = job.output ? ` · ${formatBytes(job.output.size_bytes)}` : "";
  const seconds = job.output ? job.output.duration_s : p.duration;  // an extension's: the whole video's
  card.querySelector(".facts").textContent = `${seconds} s · ${p.fps} fps · ${p.format}${size}`;
  card.querySelector(".camera").textContent = cameraLine(job.camera);
  card.querySelector(".params").textContent = paramsLine(job);
  card.querySelector(".extend-job").hidden = !done || job.deleted;
  card.querySelector(".enlarge").hidden = !done;
  card.querySelector(".download").hidden = !done;
  card.querySelector(".cancel-job").hidden = FINISHED.has(job.status);
  card.querySelector(".replay-job").hidden = !REPLAYABLE.has(job.status) || job.deleted;
  card.querySelector(".delete").hidden = !FINISHED.has(job.status);
  card.querySelector(".download").href = `${job.links.video}?download=1`;
  if (done && !media.querySelector("video, img:not(.preview)")) {
    const label = `Video ${job.id}, ${seconds} seconds at ${p.fps} fps`;
    if (isAnimatedImage(job)) {
      // GIF and animated WebP play in an <img>, as browsers do not take them as <video> sources.
      const img = document.createElement("img");
      img.src = job.links.video;
      img.alt = label;
      media.replaceChildren(img);
    } else {
      const video = document.createElement("video");
      video.controls = true;
      video.preload = "metadata";
      video.playsInline = true;
      video.muted = true;
      video.loop = true;
      video.poster = job.links.poster;
      video.src = job.links.video;
      video.setAttribute("aria-label", label);
      media.replaceChildren(video);
    }
  } else if (!done && (FINISHED.has(job.status) || !media.querySelector("img.preview"))) {
    media.textContent = FINISHED.has(job.status) ? job.status : `${job.status} · ${job.progress}%`;
  }
  let err = card.querySelector(".err");
  if (job.error && job.status !== "cancelled") {
    if (!err) { err = document.createElement("p"); err.className = "err"; card.querySelector(".meta").after(err); }
    err.textContent = job.error.message;
  } else if (err) err.remove();
}

// "seed 1234 · 25 steps · cfg 1–2.5 · motion 127 · 256×192", and what an extension continues.
function paramsLine(job) {
  const p = job.parameters;
  const size = job.output ? `${job.output.width}×${job.output.height}`
    : p.resolution ? `${p.resolution.width}×${p.resolution.height}` : "auto size";
  const parts = [`seed ${job.seed}`, `${p.steps} steps`, `cfg ${p.min_cfg}–${p.cfg_scale}`,
    `motion ${p.motion_bucket_id}`, size];
  if (p.augmentation_level) parts.push(`augmentation ${p.augmentation_level}`);
  if (p.loop !== "none") parts.push(`${p.loop} loop`);
  if (p.stabilize) parts.push("stabilized");
  if (job.extends) parts.push(`+${p.duration} s after ${job.extends}`);
  return parts.join(" · ");
}

function isAnimatedImage(job) {
  return Boolean(job.output && job.output.content_type.startsWith("image/"));
}

// "camera: slow zoom in, slow pan left · not understood: sparkle" (the words the server parsed).
function cameraLine(camera) {
  if (!camera) return "";
  const moves = [];
  for (let i = 0; i + 2 < camera.words.length; i += 3) moves.push(camera.words.slice(i, i + 3).join(" "));
  const move = moves.length ? moves.join(", ") : camera.words.join(" ");
  const unknown = camera.unknown.length ? ` · not understood: ${camera.unknown.join(" ")}` : "";
  return move === "static" && !unknown ? "" : `camera: ${move}${unknown}`;
}

function updateCardProgress(view) {
  const card = cardOf(view.id);
  if (!card || card.querySelector(".media video, .media img:not(.preview)")) return;
  const media = card.querySelector(".media");
  if (!media.querySelector("img.preview")) media.textContent = `${view.status} · ${view.progress}%`;
  const status = card.querySelector(".status");
  status.textContent = view.status;
  status.className = `status ${view.status}`;
}

async function deleteJob(id) {
  if (!confirm("Delete this video? Its files are removed; your points history keeps the job.")) return;
  try {
    await api(`/v1/jobs/${id}`, { method: "DELETE" });
    const card = cardOf(id);
    if (card) card.remove();
    $("empty").hidden = $("grid").children.length > 0;
  } catch (err) {
    $("form-error").textContent = err.message;
  }
}

function enlarge(id) {
  const video = $("player-video");
  const img = $("player-img");
  const animated = Boolean(cardOf(id) && cardOf(id).querySelector(".media img:not(.preview)"));
  video.hidden = animated;
  img.hidden = !animated;
  $("player-title").textContent = `Video ${id}`;
  if (animated) {
    img.src = `/v1/jobs/${id}/video`;
    img.alt = `Video ${id}`;
    $("player").showModal();
    return;
  }
  video.src = `/v1/jobs/${id}/video`;
  video.poster = `/v1/jobs/${id}/poster`;
  $("player").showModal();
  video.play().catch(() => null);
}
$("player").addEventListener("close", () => { $("player-video").pause(); $("player-img").removeAttribute("src"); });

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

start();
