"""Run logs: metrics.jsonl (one object per logged step), TensorBoard events, console progress."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

METRICS_JSONL = "metrics.jsonl"


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf; a diverged value is recorded as a string so the line stays valid JSON
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """Appends JSON lines; on resume, lines past the resumed step (from the killed run) are dropped."""

    def __init__(self, run_dir: Path, tensorboard: bool, resume_step: int | None = None):
        self.path = Path(run_dir) / METRICS_JSONL
        if resume_step is not None:
            self._truncate_after(resume_step)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the run
        self._tb = None
        if tensorboard:
            self._tb = _summary_writer()(str(Path(run_dir) / "tb"), purge_step=resume_step)

    def _truncate_after(self, step: int) -> None:
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
        from genforge.core.atomic import write_text

        write_text(self.path, "".join(k + "\n" for k in kept))

    def write(self, record: dict[str, Any]) -> None:
        record = {k: _clean(v) for k, v in record.items()}
        self._fh.write(json.dumps(record, sort_keys=True) + "\n")
        self._fh.flush()
        if self._tb is not None:
            step = int(record.get("step", 0))
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, step)

    def add_image(self, tag: str, grid_hwc, step: int) -> None:
        if self._tb is not None:
            self._tb.add_image(tag, grid_hwc, step, dataformats="HWC")

    def add_text(self, tag: str, text: str, step: int) -> None:
        if self._tb is not None:
            self._tb.add_text(tag, text, step)

    def add_audio(self, tag: str, audio, step: int, sample_rate: int) -> None:
        """A mono clip, float (T,) in [-1, 1]."""
        if self._tb is not None:
            self._tb.add_audio(tag, audio.reshape(1, -1), step, sample_rate=sample_rate)

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()


def _summary_writer():
    """torch's SummaryWriter class, without importing TensorFlow when that happens to be installed.

    TensorBoard's compat layer imports TensorFlow (seconds) unless the module
    `tensorboard.compat.notf` exists, its switch for the bundled stub that writes event files alone.
    """
    import types

    if "tensorflow" not in sys.modules:
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter


class Progress:
    """A rich progress bar on a terminal, one plain line per log step otherwise."""

    def __init__(self, mode: str):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode = mode
        self._bar = None
        self._start = time.monotonic()
        if mode == "bar":
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("[bold]train[/]"),
                BarColumn(),
                TextColumn("{task.percentage:>5.1f}%"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
                transient=False,
            )
            self._task = self._bar.add_task("train", total=1.0, info="")
            self._bar.start()

    def update(self, fraction: float, record: dict[str, Any]) -> None:
        info = _summary(record)
        if self._bar is not None:
            self._bar.update(self._task, completed=fraction, info=info)
        elif self.mode == "lines":
            print(f"[{100 * fraction:5.1f}%] {info}", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text, highlight=False)
        elif self.mode != "none":
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _summary(record: dict[str, Any]) -> str:
    parts = [f"step {record.get('step', 0)}", f"{record.get('images_per_s', 0.0):.0f} img/s"]
    for key, value in record.items():
        if (key == "loss" or key.endswith("/loss")) and isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
    return "  ".join(parts)
