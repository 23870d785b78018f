// The audio gallery: reads /v1/models; for a generation run posts /v1/generate (format json: one
// base64 WAV per clip) and shows an <audio> player per clip; for an enhancement run uploads a
// recording to /v1/enhance and plays the input beside the enhanced output (helpers in common.js).
"use strict";

let model = null;
const urls = []; // object URLs of the players on the page, revoked when replaced

function option(value, text) {
  return new Option(text, value);
}

function showModel(info) {
  model = info;
  $("model-name").textContent = info.model + (info.step != null ? " · step " + info.step : "");
  const what = info.task === "restore" ? "enhancement" : `${info.clip_seconds.toFixed(2)} s clips`;
  $("model-summary").textContent = `${info.family} · audio · ${what} at ${info.sample_rate} Hz` +
    (info.fingerprint ? ` · dataset ${String(info.fingerprint).slice(0, 12)}` : "");
  $("n").max = info.limits.max_n;
  if (info.conditional) {
    const select = $("class");
    select.replaceChildren(option("", "all classes"));
    for (let i = 0; i < info.num_classes; i++) {
      const name = info.class_names && info.class_names[i] != null ? `${i}: ${info.class_names[i]}` : String(i);
      select.appendChild(option(String(i), name));
    }
    $("class-field").hidden = false;
  }
  if (info.speaker_conditional) {
    const select = $("speaker");
    select.replaceChildren(option("", "each in turn"));
    for (const s of info.speakers) select.appendChild(option(String(s.id), s.name != null ? `${s.id}: ${s.name}` : String(s.id)));
    $("speaker-field").hidden = false;
  }
  $("steps-field").hidden = !info.options.includes("steps");
  $("steps").max = info.limits.max_steps;
  $("guidance-field").hidden = !(info.options.includes("guidance") && (info.conditional || info.speaker_conditional));
  showMetrics(info);
  const restore = info.task === "restore";
  fillTable($("model-info").tBodies[0], [
    ["model", info.model], ["family", info.family], ["step", info.step], ["task", info.task],
    ["sample rate", `${info.sample_rate} Hz`], ["classes", info.num_classes],
    ["speakers", info.speaker_conditional ? info.speakers.length + (info.speaker_allowlist ? " (allow-list)" : "") : "—"],
    ["dataset fingerprint", info.fingerprint ? String(info.fingerprint).slice(0, 16) + "…" : "—"],
    restore ? ["longest upload", `${info.limits.max_audio_seconds} s`] : ["micro-batching", info.batching.enabled ? "on" : "off"],
  ]);
  $("controls").hidden = restore;
  $("enhance-form").hidden = !restore;
  setStatus(restore ? "Choose a recording to enhance." : "Ready.");
}

function request() {
  const body = { n: Number($("n").value), seed: Number($("seed").value), format: "json" };
  if (model && model.conditional && $("class").value !== "") body["class"] = Number($("class").value);
  if (model && model.speaker_conditional && $("speaker").value !== "") body.speaker = Number($("speaker").value);
  if (!$("steps-field").hidden) body.steps = Number($("steps").value);
  if (!$("guidance-field").hidden) body.guidance = Number($("guidance").value);
  return body;
}

function clearClips() {
  while (urls.length) URL.revokeObjectURL(urls.pop());
  $("clips").replaceChildren();
}

// a <figure> with an <audio controls> playing `blob`, captioned
function addPlayer(blob, caption) {
  const url = URL.createObjectURL(blob);
  urls.push(url);
  const figure = document.createElement("figure");
  const audio = document.createElement("audio");
  audio.controls = true;
  audio.preload = "metadata";
  audio.src = url;
  const text = document.createElement("figcaption");
  text.textContent = caption;
  figure.append(audio, text);
  $("clips").appendChild(figure);
  return audio;
}

function wavBlob(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type: "audio/wav" });
}

function captionOf(body, i) {
  const parts = [`clip ${i + 1}`];
  if (body.labels) {
    const k = body.labels[i];
    parts.push("class " + (model.class_names && model.class_names[k] != null ? model.class_names[k] : k));
  }
  if (body.speakers) {
    const s = model.speakers.find((x) => x.id === body.speakers[i]);
    parts.push("speaker " + (s && s.name != null ? s.name : body.speakers[i]));
  }
  return parts.join(" · ");
}

// fetch + error handling shared by both forms: resolves to the response, or null after an error
async function call(button, label, url, init) {
  rememberKey();
  if (!model && !(await loadModel(showModel))) return null;
  button.disabled = true;
  setStatus(label);
  try {
    const resp = await fetch(url, init);
    if (!resp.ok) {
      if (resp.status === 401) $("key-field").hidden = false;
      setStatus(await errorText(resp), true);
      return null;
    }
    return resp;
  } catch (err) {
    setStatus("Request failed: " + err, true);
    return null;
  } finally {
    button.disabled = false;
  }
}

async function generate(event) {
  event.preventDefault();
  const started = performance.now();
  const resp = await call($("generate"), "Generating…", "/v1/generate", {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify(request()),
  });
  if (!resp) return;
  const body = await resp.json();
  clearClips();
  body.audio.forEach((b64, i) => addPlayer(wavBlob(b64), captionOf(body, i)));
  const ms = Math.round(performance.now() - started);
  setStatus(`seed ${body.seed} · ${body.audio.length} clips · ${ms} ms`);
}

async function enhance(event) {
  event.preventDefault();
  const file = $("upload").files[0];
  if (!file) {
    setStatus("Choose a recording first.", true);
    return;
  }
  const started = performance.now();
  const resp = await call($("enhance"), "Enhancing…", "/v1/enhance", {
    method: "POST",
    headers: headers({ "Content-Type": file.type || "application/octet-stream" }),
    body: file,
  });
  if (!resp) return;
  const out = await resp.blob();
  clearClips();
  addPlayer(file, `input · ${file.name}`);
  addPlayer(out, `enhanced · ${resp.headers.get("X-Genforge-Sample-Rate")} Hz`);
  setStatus(`enhanced in ${Math.round(performance.now() - started)} ms`);
}

$("controls").addEventListener("submit", generate);
$("enhance-form").addEventListener("submit", enhance);
$("random-seed").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 2147483647); });
loadModel(showModel);
