// The image gallery: reads /v1/models, shows the controls the model takes, posts /v1/generate
// (helpers in common.js).
"use strict";

let model = null;

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
  showMetrics(info);
  fillTable($("model-info").tBodies[0], [
    ["model", info.model], ["family", info.family], ["step", info.step], ["classes", info.num_classes],
    ["dataset fingerprint", info.fingerprint ? String(info.fingerprint).slice(0, 16) + "…" : "—"],
    ["micro-batching", info.batching.enabled ? "on" : "off"],
  ]);
  const restore = info.task !== "generate";
  $("generate").disabled = restore;
  setStatus(restore ? "This model restores images: use POST /v1/restore." : "Ready.");
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
  rememberKey();
  if (!model && !(await loadModel(showModel))) return;
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
loadModel(showModel);
