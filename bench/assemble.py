"""Write BENCHMARKS.md: the goals table (bench/goals.md) followed by every result file in
bench/results/, each of which records its own machine, date and command.

    .venv/bin/python bench/assemble.py
"""

from __future__ import annotations

import re
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
    # images referenced relative to bench/results/ (a folder beside the result file) resolve from
    # the repository root here
    folders = "|".join(re.escape(p.name) for p in (BENCH / "results").iterdir() if p.is_dir())
    if folders:
        body = re.sub(rf"\]\(({folders})/", r"](bench/results/\1/", body)
    write_text(BENCH.parent / "BENCHMARKS.md", body)


if __name__ == "__main__":
    main()
