"""Evaluate stage: feature extractors, metrics, memorisation audit, run report.

`evaluate.evaluate_target` turns a run directory or a samples.npz plus a reference dataset into
`metrics.json`; `callback.EvalCallback` computes a cheap subset during training.
"""
