// The text gallery: a prompt box posting /v1/completions with stream: true and showing the
// completion as its server-sent events arrive (fetch + ReadableStream; helpers in common.js).
"use strict";

let running = null; // the AbortController of the completion being streamed

function showModel(info) {
  const summary = `${info.family} · text · ${info.tokenizer.kind} tokenizer, ${info.vocab_size} tokens · ` +
    `context ${info.context_length}`;
  showRun(info, summary, [
    ["tokenizer", `${info.tokenizer.kind} (${info.tokenizer.vocab_size})`], ["context length", info.context_length],
  ], ["continuous batching", `${info.batching.slots} slots`]);
  $("max-tokens").max = info.limits.max_tokens;
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
  const started = performance.now();
  let finish = null;
  const init = () => {
    const body = request();
    $("shown-prompt").textContent = body.prompt;
    $("generated").textContent = "";
    $("stop-button").disabled = false;
    running = new AbortController();
    return { ...postJSON(body), signal: running.signal };
  };
  await call($("generate"), "Generating…", "/v1/completions", init, async (resp) => {
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
  });
  running = null;
  $("stop-button").disabled = true;
}

$("stop-button").addEventListener("click", () => running && running.abort());
startPage(showModel, generate);
