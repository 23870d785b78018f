// The image gallery: reads /v1/models, shows the controls the model takes, posts /v1/generate
// (helpers in common.js).
"use strict";

function showModel(info) {
  showRun(info, `${info.family} · ${info.task} · ${info.image_shape.join("×")} images`,
    [["classes", info.num_classes]], ["micro-batching", info.batching.enabled ? "on" : "off"]);
  $("n").max = info.limits.max_n;
  showSamplingFields(info, info.conditional);
  const restore = info.task !== "generate";
  $("generate").disabled = restore;
  setStatus(restore ? "This model restores images: use POST /v1/restore." : "Ready.");
}

async function generate(event) {
  event.preventDefault();
  const started = performance.now();
  await call($("generate"), "Generating…", "/v1/generate", () => postJSON(generateRequest("png")), async (resp) => {
    const img = $("grid");
    const old = img.src;
    img.src = URL.createObjectURL(await resp.blob());
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
    img.hidden = false;
    const ms = Math.round(performance.now() - started);
    setStatus(`seed ${resp.headers.get("X-Genforge-Seed")} · ${Number($("n").value)} images · ${ms} ms`);
  });
}

addSamplingFields();
startPage(showModel, generate);
