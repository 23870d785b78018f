"""`genforge` commands of the deploy stage: `serve` and `export`."""

from __future__ import annotations

from pathlib import Path

import typer


def serve(
    run_dir: Path = typer.Argument(..., help="A finished `genforge train` run directory."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port (0 = any free port; the URL is printed)."),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="GENFORGE_API_KEY", help="Require this key on /v1/* (Bearer or X-API-Key)."
    ),
    max_batch: int = typer.Option(64, help="Images per merged forward pass."),
    max_wait_ms: float = typer.Option(
        5.0, help="Under load, how long a batch waits for more requests (an idle model runs a request at once)."
    ),
    batching: bool = typer.Option(True, "--batching/--no-batching", help="Merge concurrent requests."),
    max_n: int = typer.Option(256, help="Most images per request."),
    timeout: float = typer.Option(60.0, help="Seconds before a request gets 504."),
    threads: int = typer.Option(
        0, help="Torch threads for the model (0 = torch's default less one core, left to the event loop)."
    ),
    log_level: str = typer.Option("warning", help="uvicorn log level."),
) -> None:
    """Serve a trained model over HTTP: /v1/generate, /v1/restore, /v1/models, the gallery at /."""
    import sys

    from genforge.deploy.config import ServeConfig
    from genforge.deploy.server import ServiceServer
    from genforge.models.pipeline import load_pipeline

    config = ServeConfig(
        run_dir=str(run_dir),
        host=host,
        port=port,
        api_key=api_key or None,
        batching=batching,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_n=max_n,
        request_timeout_s=timeout,
        torch_threads=threads,
    )
    pipeline = load_pipeline(run_dir)  # here, so a bad run directory fails before listening
    server = ServiceServer(config, pipeline, log_level=log_level)
    print(
        f"genforge serve: {pipeline.name} on {server.url} (gallery at {server.url}/)",
        file=sys.stderr,
        flush=True,
    )
    server.run()


def export(
    run_dir: Path = typer.Argument(..., help="A finished `genforge train` run directory."),
    format: str = typer.Option("onnx", "--format", help="onnx | torchscript"),
    out: Path = typer.Option(..., "--out", help="Output file (a description is written to OUT.json)."),
) -> None:
    """Export the model's network (generator, VAE decoder, denoiser) for other runtimes."""
    from genforge.deploy.export import export_run, sidecar_path

    meta = export_run(run_dir, format, out)
    inputs = ", ".join(f"{i['name']}{i['shape']}" for i in meta["inputs"])
    typer.echo(f"wrote {out} ({meta['family']} {meta['task']}, inputs {inputs}) and {sidecar_path(out).name}")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("export")(export)
