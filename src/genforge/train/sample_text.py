"""`genforge sample` on a text run: completions of a prompt, printed or written to .txt/.jsonl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from genforge.core.atomic import write_text
from genforge.core.errors import GenforgeError
from genforge.train.sampling import SAMPLE_WRITERS, SampleWriter

DEFAULT_N = 1
DEFAULT_MAX_TOKENS = 256
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(text: str) -> str:
    r"""The shell passes "\n" as a backslash and an n: read \n, \t, \r and \\ as the characters
    (--prompt "ROMEO:\n", --stop "\n\n"); any other backslash stays as it is."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            out.append(_ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def format_text(completions: list[Any]) -> str:
    """Completions for reading: a header line each, then the prompt and its continuation."""
    return "".join(
        f"=== completion {c.index} ({c.finish_reason}, {c.n_tokens} tokens)\n{c.prompt}{c.text}\n" for c in completions
    )


def format_jsonl(completions: list[Any]) -> str:
    rows = [
        {
            "index": c.index,
            "prompt": c.prompt,
            "text": c.text,
            "finish_reason": c.finish_reason,
            "prompt_tokens": c.n_prompt_tokens,
            "completion_tokens": c.n_tokens,
        }
        for c in completions
    ]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


FORMATS = {".txt": format_text, ".jsonl": format_jsonl}


def write_text_samples(run_dir: Path, opts: dict[str, Any]) -> str:
    from genforge.models.pipeline import load_pipeline

    out = opts.get("out")
    if out is not None:
        out = Path(out)
        if out.suffix not in FORMATS:
            raise GenforgeError(f"--out {out}: expected FILE.txt or FILE.jsonl")
        if out.exists() and not opts.get("overwrite"):
            raise GenforgeError(f"{out} already exists; pass --overwrite")
    pipe = load_pipeline(run_dir, device=opts.get("device", "cpu"))
    completions = pipe.complete(
        [unescape(opts.get("prompt", ""))],
        n=int(opts.get("n", DEFAULT_N)),
        max_tokens=int(opts.get("max_tokens", DEFAULT_MAX_TOKENS)),
        temperature=float(opts.get("temperature", 1.0)),
        top_k=opts.get("top_k"),
        top_p=opts.get("top_p"),
        stop=[unescape(s) for s in opts.get("stop") or []],
        seed=int(opts.get("seed", 0)),
        runtime=opts.get("runtime"),
    )
    if out is None:
        return format_text(completions).rstrip("\n")
    write_text(out, FORMATS[out.suffix](completions))
    return f"wrote {len(completions)} completions to {out}"


SAMPLE_WRITERS.register(
    "text",
    SampleWriter(
        frozenset({"prompt", "max_tokens", "temperature", "top_k", "top_p", "stop", "runtime"}), write_text_samples
    ),
)
