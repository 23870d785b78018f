"""Write BENCHMARKS.md: the goals table (bench/goals.md) followed by every result file in
bench/results/, each of which records its own machine, date and command.

    .venv/bin/python bench/assemble.py
"""

from __future__ import annotations

from pathlib import Path

from genforge.core.atomic import write_text

BENCH = Path(__file__).resolve().parent
ORDER = ["collect", "data", "loader", "train_overhead", "models", "diffusion", "quality", "quality_init", "evaluate", "deploy"]


def main() -> None:
    results = {p.stem: p for p in (BENCH / "results").glob("*.md")}
    names = [n for n in ORDER if n in results] + sorted(set(results) - set(ORDER))
    parts = [(BENCH / "goals.md").read_text().rstrip()]
    for name in names:
        text = results[name].read_text().rstrip()
        # result files keep their own headings one level down, under this file's title
        parts.append("\n".join("#" + line if line.startswith("#") else line for line in text.splitlines()))
    body = "\n\n".join(parts) + "\n"
    # images referenced relative to bench/results/ resolve from the repository root here
    write_text(BENCH.parent / "BENCHMARKS.md", body.replace("](quality", "](bench/results/quality"))


if __name__ == "__main__":
    main()
