"""Text in the evaluate stage: likelihood, diversity and memorisation metrics (`metrics`,
`overlap`), `evaluate_text` (registered in `evaluate.evaluate.EVALUATIONS` under "text") and the
report sections of text runs (registered in `evaluate.report.REPORT_SECTIONS`)."""

from __future__ import annotations

from genforge.evaluate.text import report  # noqa: F401  (registers the report sections)
from genforge.evaluate.text.evaluation import TextEvalConfig, evaluate_text

__all__ = ["TextEvalConfig", "evaluate_text"]
