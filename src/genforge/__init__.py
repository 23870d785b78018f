"""genforge: from raw data to an evaluated, deployed generative model.

The Python API (`genforge.api`, documented in docs/python-api.md) is importable from the package
top: `genforge.ingest`, `genforge.train`, `genforge.load`, `genforge.evaluate`,
`genforge.run_scenario`. They are loaded on first use, so `import genforge` (and the CLI's
start-up) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = ("ingest", "open_dataset", "train", "load", "evaluate", "run_scenario",
        "Dataset", "RunInfo", "Model", "Generated", "GeneratedAudio", "EvalResult", "ScenarioResult")  # fmt: skip

__all__ = [*_API, "GenforgeError", "__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these load lazily (below)
    from genforge.api import (  # noqa: F401
        Dataset,
        EvalResult,
        Generated,
        GeneratedAudio,
        Model,
        RunInfo,
        ScenarioResult,
        evaluate,
        ingest,
        load,
        open_dataset,
        run_scenario,
        train,
    )
    from genforge.core.errors import GenforgeError  # noqa: F401


def __getattr__(name: str) -> Any:
    # `train` and `evaluate` are also subpackages; once imported they are found before this
    # hook, and calling them calls these same functions (core/callable_module.py)
    if name in _API:
        from genforge import api

        return getattr(api, name)
    if name == "GenforgeError":
        from genforge.core.errors import GenforgeError

        return GenforgeError
    raise AttributeError(f"module 'genforge' has no attribute {name!r}")
