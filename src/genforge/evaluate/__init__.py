"""Evaluate stage: feature extractors, metrics, memorisation audit, run report.

`evaluate.evaluate_target` turns a run directory or a samples.npz plus a reference dataset into
`metrics.json`; `callback.EvalCallback` computes a cheap subset during training.

Calling the package, `genforge.evaluate(run, ref=...)`, is the Python API's `evaluate`
(genforge/api.py; core/callable_module.py says why a package is callable).
"""

from genforge.core.callable_module import make_callable

make_callable(__name__, "genforge.api:evaluate")
