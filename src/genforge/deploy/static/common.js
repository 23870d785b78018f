// What every gallery page shares: the markup around its own controls, the API key, the status
// line, errors, requests, tables, loading /v1/models and showing it; and what the two generating
// pages (images, audio) share: the class, steps and guidance fields and their request.
// Each page's script comes after this one and ends with startPage(showModel, generate).
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "genforge-api-key";

let model = null; // /v1/models' answer, once the model has loaded
let showLoaded = null; // the page's function that shows it (startPage)

// Written here once, before the page's script runs: the header, the API key field before the
// Generate button, the status line closing the controls panel, the metrics and model tables.
function addSharedParts() {
  document.querySelector("header").innerHTML =
    '<h1>genforge <span id="model-name" class="muted">loading…</span></h1>' +
    '<p id="model-summary" class="muted"></p>';
  $("generate").insertAdjacentHTML(
    "beforebegin",
    '<label id="key-field" hidden>API key <input id="api-key" type="password" autocomplete="off"></label>',
  );
  document.querySelector(".controls").insertAdjacentHTML(
    "beforeend", '<p id="status" role="status" class="muted"></p>',
  );
  document.querySelector(".info").innerHTML =
    "<h2>Metrics</h2>" +
    '<p id="metrics-empty" class="muted" hidden>This run has not been evaluated (no metrics.json).</p>' +
    '<table id="metrics" hidden><thead><tr><th>metric</th><th>value</th></tr></thead><tbody></tbody></table>' +
    '<h2>Model</h2><table id="model-info"><tbody></tbody></table>';
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const key = $("api-key").value || localStorage.getItem(KEY_STORE);
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function rememberKey() {
  if ($("api-key").value) localStorage.setItem(KEY_STORE, $("api-key").value);
}

function setStatus(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", Boolean(isError));
}

// the service's errors are {"error": "message"}; /v1/completions' are OpenAI's {"error": {"message": ..}}
function errorMessage(body) {
  const err = body && body.error;
  return err && typeof err === "object" ? err.message : err;
}

async function errorText(resp) {
  try {
    return errorMessage(await resp.json()) || resp.statusText;
  } catch (_) {
    return resp.status + " " + resp.statusText;
  }
}

// a failed answer on the status line; a 401 also asks for the key
async function showError(resp) {
  if (resp.status === 401) $("key-field").hidden = false;
  setStatus(await errorText(resp), true);
}

// nested metrics ({"fid": {"value": ..}}) become rows "fid.value"
function flatten(obj, prefix, rows) {
  for (const [k, v] of Object.entries(obj)) {
    const name = prefix ? prefix + "." + k : k;
    if (v !== null && typeof v === "object" && !Array.isArray(v)) flatten(v, name, rows);
    else rows.push([name, v]);
  }
  return rows;
}

function formatValue(v) {
  if (typeof v === "number" && !Number.isInteger(v)) return v.toPrecision(4);
  if (Array.isArray(v)) return v.length > 8 ? "[" + v.length + " values]" : JSON.stringify(v);
  return String(v);
}

function fillTable(tbody, rows) {
  tbody.replaceChildren();
  for (const [name, value] of rows) {
    const tr = document.createElement("tr");
    for (const text of [name, formatValue(value)]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
  }
}

function showMetrics(info) {
  const rows = info.metrics ? flatten(info.metrics, "", []) : [];
  $("metrics").hidden = rows.length === 0;
  $("metrics-empty").hidden = rows.length > 0;
  fillTable($("metrics").tBodies[0], rows);
}

// The header (name, step, `summary` and the dataset), the metrics and the model table: model,
// family and step, the page's `rows`, the dataset's fingerprint, then the page's `last` row.
function showRun(info, summary, rows, last) {
  $("model-name").textContent = info.model + (info.step != null ? " · step " + info.step : "");
  $("model-summary").textContent = summary +
    (info.fingerprint ? ` · dataset ${String(info.fingerprint).slice(0, 12)}` : "");
  showMetrics(info);
  fillTable($("model-info").tBodies[0], [
    ["model", info.model], ["family", info.family], ["step", info.step], ...rows,
    ["dataset fingerprint", info.fingerprint ? String(info.fingerprint).slice(0, 16) + "…" : "—"],
    last,
  ]);
}

// GET /v1/models, then the page shows it (startPage's `show`); asks for the key on 401, retries
// while the model loads. Resolves to the model info, or null when there is none yet.
async function loadModel() {
  const resp = await fetch("/v1/models", { headers: headers() });
  if (resp.status === 401) {
    $("key-field").hidden = false;
    setStatus("This server needs an API key: enter it, then press Generate.", true);
    return null;
  }
  if (resp.status === 503) {
    setStatus("The model is loading…");
    setTimeout(loadModel, 1000);
    return null;
  }
  if (!resp.ok) {
    setStatus(await errorText(resp), true);
    return null;
  }
  model = await resp.json();
  showLoaded(model);
  return model;
}

// fetch's options to POST `body` as JSON, with the key
function postJSON(body) {
  return { method: "POST", headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify(body) };
}

// A form's request: the key remembered, the model loaded first (then `init()` builds fetch's
// options: the form's fields depend on the model), `button` disabled and `label` on the status
// line until `use(resp)` has dealt with the answer. Errors go to the status line.
async function call(button, label, url, init, use) {
  rememberKey();
  if (!model && !(await loadModel())) return;
  button.disabled = true;
  setStatus(label);
  try {
    const resp = await fetch(url, init());
    if (!resp.ok) await showError(resp);
    else await use(resp);
  } catch (err) {
    if (err.name === "AbortError") setStatus("Stopped.");
    else setStatus("Request failed: " + err.message, true);
  } finally {
    button.disabled = false;
  }
}

// --- the generating pages (images, audio) ---------------------------------------------------

// Their Class field after the Random button, Steps and Guidance before the key field: hidden
// until showSamplingFields finds that the model takes them.
function addSamplingFields() {
  $("random-seed").insertAdjacentHTML(
    "afterend", '<label id="class-field" hidden>Class <select id="class"></select></label>',
  );
  $("key-field").insertAdjacentHTML(
    "beforebegin",
    '<label id="steps-field" hidden>Steps <input id="steps" type="number" min="1" value="50"></label>' +
    '<label id="guidance-field" hidden>Guidance <input id="guidance" type="number" min="0" step="0.5" value="2"></label>',
  );
}

// the Class field of a conditional model; the Steps and Guidance fields of a sampler that takes
// them (guidance needs something to guide towards: `conditioned`)
function showSamplingFields(info, conditioned) {
  if (info.conditional) {
    const select = $("class");
    select.replaceChildren(new Option("all classes", ""));
    for (let i = 0; i < info.num_classes; i++) {
      const name = info.class_names && info.class_names[i] != null ? `${i}: ${info.class_names[i]}` : String(i);
      select.appendChild(new Option(name, String(i)));
    }
    $("class-field").hidden = false;
  }
  $("steps-field").hidden = !info.options.includes("steps");
  $("steps").max = info.limits.max_steps;
  $("guidance-field").hidden = !(info.options.includes("guidance") && conditioned);
}

// the body of POST /v1/generate from those fields
function generateRequest(format) {
  const body = { n: Number($("n").value), seed: Number($("seed").value), format };
  if (model && model.conditional && $("class").value !== "") body["class"] = Number($("class").value);
  if (!$("steps-field").hidden) body.steps = Number($("steps").value);
  if (!$("guidance-field").hidden) body.guidance = Number($("guidance").value);
  return body;
}

// The page's last line: `show` shows the model once loaded, `submit` handles the controls form.
function startPage(show, submit) {
  showLoaded = show;
  $("controls").addEventListener("submit", submit);
  $("random-seed").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 2147483647); });
  loadModel();
}

addSharedParts();
