// The audio gallery: reads /v1/models; for a generation run posts /v1/generate (format json: one
// base64 WAV per clip) and shows an <audio> player per clip; for an enhancement run uploads a
// recording to /v1/enhance and plays the input beside the enhanced output (helpers in common.js).
"use strict";

const urls = []; // object URLs of the players on the page, revoked when replaced

function showModel(info) {
  const restore = info.task === "restore";
  const what = restore ? "enhancement" : `${info.clip_seconds.toFixed(2)} s clips`;
  showRun(info, `${info.family} · audio · ${what} at ${info.sample_rate} Hz`, [
    ["task", info.task], ["sample rate", `${info.sample_rate} Hz`], ["classes", info.num_classes],
    ["speakers", info.speaker_conditional ? info.speakers.length + (info.speaker_allowlist ? " (allow-list)" : "") : "—"],
  ], restore ? ["longest upload", `${info.limits.max_audio_seconds} s`] : ["micro-batching", info.batching.enabled ? "on" : "off"]);
  $("n").max = info.limits.max_n;
  if (info.speaker_conditional) {
    const select = $("speaker");
    select.replaceChildren(new Option("each in turn", ""));
    for (const s of info.speakers) select.appendChild(new Option(s.name != null ? `${s.id}: ${s.name}` : String(s.id), String(s.id)));
    $("speaker-field").hidden = false;
  }
  showSamplingFields(info, info.conditional || info.speaker_conditional);
  $("controls").hidden = restore;
  $("enhance-form").hidden = !restore;
  setStatus(restore ? "Choose a recording to enhance." : "Ready.");
}

function request() {
  const body = generateRequest("json");
  if (model && model.speaker_conditional && $("speaker").value !== "") body.speaker = Number($("speaker").value);
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

async function generate(event) {
  event.preventDefault();
  const started = performance.now();
  await call($("generate"), "Generating…", "/v1/generate", () => postJSON(request()), async (resp) => {
    const body = await resp.json();
    clearClips();
    body.audio.forEach((b64, i) => addPlayer(wavBlob(b64), captionOf(body, i)));
    const ms = Math.round(performance.now() - started);
    setStatus(`seed ${body.seed} · ${body.audio.length} clips · ${ms} ms`);
  });
}

async function enhance(event) {
  event.preventDefault();
  const file = $("upload").files[0];
  if (!file) {
    setStatus("Choose a recording first.", true);
    return;
  }
  const started = performance.now();
  const init = () => ({
    method: "POST",
    headers: headers({ "Content-Type": file.type || "application/octet-stream" }),
    body: file,
  });
  await call($("enhance"), "Enhancing…", "/v1/enhance", init, async (resp) => {
    const out = await resp.blob();
    clearClips();
    addPlayer(file, `input · ${file.name}`);
    addPlayer(out, `enhanced · ${resp.headers.get("X-Genforge-Sample-Rate")} Hz`);
    setStatus(`enhanced in ${Math.round(performance.now() - started)} ms`);
  });
}

addSamplingFields();
$("enhance-form").addEventListener("submit", enhance);
startPage(showModel, generate);
