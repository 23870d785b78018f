// The gallery: reads /v1/models, shows the controls the model takes, posts /v1/generate.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "genforge-api-key";
let model = null;

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const key = $("api-key").value || localStorage.getItem(KEY_STORE);
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function setStatus(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", Boolean(isError));
}

async function errorText(resp) {
  try {
    const body = await resp.json();
    return body.error || resp.statusText;
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

function showModel(info) {
  model = info;
  $("model-name").textContent = info.model + (info.step != null ? " · step " + info.step : "");
  const shape = info.image_shape.join("×");
  $("model-summary").textContent = `${info.family} · ${info.task} · ${shape} images` +
    (info.fingerprint ? ` · dataset ${String(info.fingerprint).slice(0, 12)}` : "");
  $("n").max = info.limits.max_n;
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
  $("guidance-field").hidden = !(info.options.includes("guidance") && info.conditional);
  const rows = info.metrics ? flatten(info.metrics, "", []) : [];
  $("metrics").hidden = rows.length === 0;
  $("metrics-empty").hidden = rows.length > 0;
  fillTable($("metrics").tBodies[0], rows);
  fillTable($("model-info").tBodies[0], [
    ["model", info.model], ["family", info.family], ["step", info.step], ["classes", info.num_classes],
    ["dataset fingerprint", info.fingerprint ? String(info.fingerprint).slice(0, 16) + "…" : "—"],
    ["micro-batching", info.batching.enabled ? "on" : "off"],
  ]);
  const restore = info.task !== "generate";
  $("generate").disabled = restore;
  setStatus(restore ? "This model restores images: use POST /v1/restore." : "Ready.");
}

async function loadModel() {
  const resp = await fetch("/v1/models", { headers: headers() });
  if (resp.status === 401) {
    $("key-field").hidden = false;
    setStatus("This server needs an API key: enter it, then press Generate.", true);
    return;
  }
  if (resp.status === 503) {
    setStatus("The model is loading…");
    setTimeout(loadModel, 1000);
    return;
  }
  if (!resp.ok) {
    setStatus(await errorText(resp), true);
    return;
  }
  showModel(await resp.json());
}

function request() {
  const body = { n: Number($("n").value), seed: Number($("seed").value), format: "png" };
  if (model && model.conditional && $("class").value !== "") body["class"] = Number($("class").value);
  if (!$("steps-field").hidden) body.steps = Number($("steps").value);
  if (!$("guidance-field").hidden) body.guidance = Number($("guidance").value);
  return body;
}

async function generate(event) {
  event.preventDefault();
  if ($("api-key").value) localStorage.setItem(KEY_STORE, $("api-key").value);
  if (!model) {
    await loadModel();
    if (!model) return;
  }
  const button = $("generate");
  button.disabled = true;
  setStatus("Generating…");
  const started = performance.now();
  try {
    const resp = await fetch("/v1/generate", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(request()),
    });
    if (!resp.ok) {
      setStatus(await errorText(resp), true);
      return;
    }
    const img = $("grid");
    const old = img.src;
    img.src = URL.createObjectURL(await resp.blob());
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
    img.hidden = false;
    const ms = Math.round(performance.now() - started);
    setStatus(`seed ${resp.headers.get("X-Genforge-Seed")} · ${request().n} images · ${ms} ms`);
  } catch (err) {
    setStatus("Request failed: " + err, true);
  } finally {
    button.disabled = false;
  }
}

$("controls").addEventListener("submit", generate);
$("random-seed").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 2147483647); });
loadModel();
