// What every gallery page shares: the API key, the status line, errors, tables, loading /v1/models.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "genforge-api-key";

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

// GET /v1/models, then show(info); asks for the key on 401, retries while the model loads.
// Resolves to the model info, or null when there is none yet.
async function loadModel(show) {
  const resp = await fetch("/v1/models", { headers: headers() });
  if (resp.status === 401) {
    $("key-field").hidden = false;
    setStatus("This server needs an API key: enter it, then press Generate.", true);
    return null;
  }
  if (resp.status === 503) {
    setStatus("The model is loading…");
    setTimeout(() => loadModel(show), 1000);
    return null;
  }
  if (!resp.ok) {
    setStatus(await errorText(resp), true);
    return null;
  }
  const info = await resp.json();
  show(info);
  return info;
}
