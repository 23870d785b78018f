"""The one trainer: phases, EMA, checkpoints, exact resume, divergence guard, DDP, logs.

Calling the package, `genforge.train(model, data, out, ...)`, is the Python API's `train`
(genforge/api.py; core/callable_module.py says why a package is callable).
"""

from genforge.core.callable_module import make_callable

make_callable(__name__, "genforge.api:train")
