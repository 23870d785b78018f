"""Metrics registry; importing this package registers the built-in metrics, in the order reports list them."""

import importlib

from genforge.evaluate.metrics.base import METRICS, EvalInputs, FeatureSet, Metric, MetricValues  # noqa: F401

METRIC_MODULES = ("fid", "kid", "prdc", "inception_score", "confidence", "conditional")

for _m in METRIC_MODULES:
    importlib.import_module(f"genforge.evaluate.metrics.{_m}")
