// The text gallery: a prompt box posting /v1/completions with stream: true and showing the
// completion as its server-sent events arrive (fetch + ReadableStream; helpers in common.js).
"use strict";

let model = null;
let running = null; // the AbortController of the completion being streamed

function showModel(info) {
  model = info;
  $("model-name").textContent = info.model + (info.step != null ? " · step " + info.step : "");
  $("model-summary").textContent = `${info.family} · text · ${info.tokenizer.kind} tokenizer, ` +
    `${info.vocab_size} tokens · context ${info.context_length}` +
    (info.fingerprint ? ` · dataset ${String(info.fingerprint).slice(0, 12)}` : "");
  $("max-tokens").max = info.limits.max_tokens;
  showMetrics(info);
  fillTable($("model-info").tBodies[0], [
    ["model", info.model], ["family", info.family], ["step", info.step],
    ["tokenizer", `${info.tokenizer.kind} (${info.tokenizer.vocab_size})`],
    ["context length", info.context_length],
    ["dataset fingerprint", info.fingerprint ? String(info.fingerprint).slice(0, 16) + "…" : "—"],
    ["continuous batching", `${info.batching.slots} slots`],
  ]);
  setStatus("Ready.");
}

// "\n" typed in the stop box means a line break
function unescape(text) {
  return text.replace(/\\(n|t|\\)/g, (_, c) => ({ n: "\n", t: "\t", "\\": "\\" })[c]);
}

function request() {
  const body = {
    model: model.model,
    prompt: $("prompt").value,
    max_tokens: Number($("max-tokens").value),
    temperature: Number($("temperature").value),
    top_p: Number($("top-p").value),
    top_k: Number($("top-k").value),
    seed: Number($("seed").value),
    stream: true,
  };
  const stop = unescape($("stop").value);
  if (stop) body.stop = stop;
  return body;
}

// Calls onEvent(json) for each `data:` event of a server-sent event stream until [DONE].
async function readEvents(resp, onEvent) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (data === "[DONE]") return;
      if (data) onEvent(JSON.parse(data));
    }
  }
}

async function generate(event) {
  event.preventDefault();
  rememberKey();
  if (!model && !(await loadModel(showModel))) return;
  const body = request();
  $("shown-prompt").textContent = body.prompt;
  $("generated").textContent = "";
  $("generate").disabled = true;
  $("stop-button").disabled = false;
  setStatus("Generating…");
  running = new AbortController();
  const started = performance.now();
  let finish = null;
  try {
    const resp = await fetch("/v1/completions", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
      signal: running.signal,
    });
    if (!resp.ok) {
      if (resp.status === 401) $("key-field").hidden = false;
      setStatus(await errorText(resp), true);
      return;
    }
    await readEvents(resp, (chunk) => {
      if (chunk.error) throw new Error(errorMessage(chunk));
      for (const choice of chunk.choices) {
        $("generated").textContent += choice.text;
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    });
    const s = (performance.now() - started) / 1000;
    const why = finish === "stop" ? "stop sequence" : "max tokens";
    setStatus(`seed ${resp.headers.get("X-Genforge-Seed")} · ended by ${why} · ${s.toFixed(2)} s`);
  } catch (err) {
    if (err.name === "AbortError") setStatus("Stopped.");
    else setStatus("Request failed: " + err.message, true);
  } finally {
    running = null;
    $("generate").disabled = false;
    $("stop-button").disabled = true;
  }
}

$("controls").addEventListener("submit", generate);
$("stop-button").addEventListener("click", () => running && running.abort());
$("random-seed").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 2147483647); });
loadModel(showModel);
