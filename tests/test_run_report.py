"""`genforge report RUN_DIR`: one self-contained HTML page with every section filled."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from genforge.cli import app
from genforge.evaluate.evaluate import EvalConfig, evaluate
from test_eval_fixtures import squares_dataset, tiny_run


def _images(page: str) -> list[np.ndarray]:
    out = []
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        out.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(data)))))
    return out


def test_report_has_every_section(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    ds = squares_dataset(tmp_path / "ds")
    (ds / "report.json").write_text(json.dumps({
        "summary": {"images": 800, "quarantined": 3, "duplicates_dropped": 2, "leakage_pairs": 1,
                    "outliers": {"blank": 1}},
        "quarantine_by_kind": {"truncated": 3},
        "leakage": [{"a": {"origin": "train[5]"}, "b": {"origin": "val[9]"}, "kind": "exact"}],
        "notes": ["2 exact duplicates removed"],
    }))  # fmt: skip
    run = tiny_run(tmp_path / "run", ds, num_classes=4, step=40)
    with open(run / "metrics.jsonl", "w") as fh:
        for step in (10, 20, 30, 40):
            fh.write(json.dumps({"step": step, "loss": 1.0 / step, "eval/fid": 50.0 - step}) + "\n")
    evaluate(run, ds, EvalConfig(n=100, features="random", kid_subsets=3))
    res = CliRunner().invoke(app, ["report", str(run), "--n", "16"])
    assert res.exit_code == 0, res.output
    page = (run / "report.html").read_text()
    for heading in ("Samples beside real images", "Metrics", "Training curves", "Memorisation audit",
                    "Data quality of the training set"):  # fmt: skip
        assert f"<h2>{heading}" in page
    assert "lower is better" in page and "0 = identical mean and covariance" in page  # metric meanings
    assert "quarantined" in page and "truncated" in page and "val[9]" in page  # data quality findings
    assert "4 samples per class, one row per class" in page  # conditional grid
    assert "nearest training image" in page and "copy rate" in page
    assert "http" not in page.replace("http://www.w3.org", "")  # nothing fetched by the page
    images = _images(page)
    # generated grid, real grid, curves, two memorisation pair grids
    assert len(images) == 5
    generated = images[0]
    assert generated.shape[0] == 4 * (16 + 2) + 2  # one row per class


def test_report_without_metrics_says_how_to_get_them(tmp_path) -> None:
    ds = squares_dataset(tmp_path / "ds")
    run = tiny_run(tmp_path / "run", ds)
    res = CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r.html").read_text()
    assert "genforge eval" in page and "No metrics.jsonl curves" in page
    assert "No data quality report" in page
