"""`genforge` commands of the deploy stage: `serve` and `export`."""

from __future__ import annotations

from pathlib import Path

import typer

from genforge.core.threads import THREADS_HELP
from genforge.core.threads import configure as configure_threads


def serve(
    run_dir: Path = typer.Argument(..., help="A finished `genforge train` run directory."),
    host: str = typer.Option(
        "127.0.0.1",
        help="Interface to listen on (any but loopback needs an API key or --allow-unauthenticated).",
    ),
    port: int = typer.Option(8000, help="Port (0 = any free port; the URL is printed)."),
    api_key: list[str] = typer.Option(
        None,
        "--api-key",
        envvar="GENFORGE_API_KEY",
        help="Require this key on /v1/* (Bearer or X-API-Key); repeatable, or several keys separated by "
        "spaces in $GENFORGE_API_KEY. Prefer the variable or --api-key-file: arguments show in `ps`.",
    ),
    api_key_file: Path = typer.Option(
        None,
        "--api-key-file",
        envvar="GENFORGE_API_KEY_FILE",
        help="File with one 'name:key' (or bare 'key') per line, one per client; '#' comments.",
    ),
    allow_unauthenticated: bool = typer.Option(
        False, "--allow-unauthenticated", help="Serve without any API key on a non-loopback address."
    ),
    rate_limit: str = typer.Option(
        "0",
        "--rate-limit",
        help="Requests per client (API key) on /v1/*: N per second, or N/s, N/min, N/h; 0 = off.",
    ),
    rate_burst: int = typer.Option(
        0, "--rate-burst", help="Requests a client may send at once (0 = the rate rounded up)."
    ),
    http: str = typer.Option(
        "auto", "--http", help="auto | h11 | httptools (auto: httptools when installed)."
    ),
    loop: str = typer.Option("auto", "--loop", help="auto | asyncio | uvloop (auto: uvloop when installed)."),
    max_batch: int = typer.Option(64, help="Images per merged forward pass (text: sequences decoded together)."),
    max_wait_ms: float = typer.Option(
        5.0,
        help="Under load, how long a batch waits for more requests (an idle model runs a request at once).",
    ),
    batching: bool = typer.Option(True, "--batching/--no-batching", help="Merge concurrent requests."),
    max_n: int = typer.Option(256, help="Most images per request (text: completions, prompts x n)."),
    max_tokens: int = typer.Option(1024, help="Text: most tokens one completion may generate."),
    max_prompt_tokens: int = typer.Option(4096, help="Text: most tokens in one prompt."),
    text_runtime: str = typer.Option(
        None, "--text-runtime", help="Text: decode step in torch | onnx (ONNX Runtime) | onnx-int8 (its weights in "
        "8 bits: faster, logits rounded) | auto (default: $GENFORGE_TEXT_RUNTIME, else auto: onnx for an fp32 "
        "model on the CPU)."
    ),
    stream_interval_ms: float = typer.Option(
        10.0, "--stream-interval-ms", help="Text, streamed answers: send a choice's new text at most this often "
        "(its first token and its end at once; 0 = a chunk per token)."
    ),
    max_audio_seconds: float = typer.Option(
        30.0, help="Audio: longest upload /v1/enhance takes (413 beyond)."
    ),
    allow_speaker: list[str] = typer.Option(
        None,
        "--allow-speaker",
        help="Audio: a speaker id or name clients may request (repeatable); others get 403. Default: all.",
    ),
    timeout: float = typer.Option(60.0, help="Seconds before a request gets 504."),
    threads: int = typer.Option(
        0, help="Torch threads for the model (0 = torch's default less one core, left to the event loop)."
    ),
    log_level: str = typer.Option("warning", help="uvicorn log level."),
) -> None:
    """Serve a trained model over HTTP: /v1/generate and /v1/restore (images), /v1/generate and
    /v1/enhance (audio) or /v1/completions (text, OpenAI-compatible), /v1/models, the gallery at /."""
    import sys

    from genforge.deploy.config import (
        ServeConfig,
        add_key,
        is_loopback,
        key_file_warning,
        key_name,
        parse_rate,
        read_key_file,
    )
    from genforge.deploy.server import ServiceServer
    from genforge.models.pipeline import load_pipeline

    warnings = []
    keys = read_key_file(api_key_file) if api_key_file else {}
    if api_key_file and (warning := key_file_warning(api_key_file)):
        warnings.append(warning)
    for key in api_key or ():
        if key.strip():
            add_key(keys, key_name(key), key, "--api-key / GENFORGE_API_KEY")
    if any(arg == "--api-key" or arg.startswith("--api-key=") for arg in sys.argv):
        warnings.append(
            "--api-key on the command line shows in `ps`; prefer GENFORGE_API_KEY or --api-key-file"
        )
    config = ServeConfig(
        run_dir=str(run_dir),
        host=host,
        port=port,
        api_keys=keys,
        allow_unauthenticated=allow_unauthenticated,
        rate_limit=parse_rate(rate_limit),
        rate_burst=rate_burst,
        http=http,
        loop=loop,
        batching=batching,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_n=max_n,
        max_tokens=max_tokens,
        max_prompt_tokens=max_prompt_tokens,
        text_runtime=text_runtime,
        stream_interval_ms=stream_interval_ms,
        max_audio_seconds=max_audio_seconds,
        allowed_speakers=list(allow_speaker or ()),
        request_timeout_s=timeout,
        torch_threads=threads,
    )
    if not keys and not is_loopback(host):
        warnings.append(f"serving without authentication on {host} (--allow-unauthenticated)")
    pipeline = load_pipeline(run_dir)  # here, so a bad run directory fails before listening
    server = ServiceServer(config, pipeline, log_level=log_level)
    access = f"{len(keys)} API key{'s' if len(keys) != 1 else ''}" if keys else "no API key"
    print(
        f"genforge serve: {pipeline.name} on {server.url} (gallery at {server.url}/; {access}; "
        f"uvicorn {server.http} + {server.loop})",
        file=sys.stderr,
        flush=True,
    )
    for warning in warnings:
        print(f"genforge serve: warning: {warning}", file=sys.stderr, flush=True)
    server.run()


def export(
    run_dir: Path = typer.Argument(..., help="A finished `genforge train` run directory."),
    format: str = typer.Option("onnx", "--format", help="onnx | torchscript"),
    out: Path = typer.Option(..., "--out", help="Output file (a description is written to OUT.json)."),
    threads: int = typer.Option(0, "--threads", help=THREADS_HELP),
) -> None:
    """Export the model's network (generator, VAE decoder, denoiser) for other runtimes."""
    configure_threads(threads)
    from genforge.deploy.export import export_run, sidecar_path

    meta = export_run(run_dir, format, out)
    inputs = ", ".join(f"{i['name']}{i['shape']}" for i in meta["inputs"])
    typer.echo(f"wrote {out} ({meta['family']} {meta['task']}, inputs {inputs}) and {sidecar_path(out).name}")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("export")(export)
