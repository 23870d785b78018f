"""Packages that are also the API function of their stage: `genforge.train(...)`.

The public API names its functions after the stages (`genforge.train`, `genforge.evaluate`),
and those are also subpackages. Importing a submodule binds it as an attribute of its parent
package, so after `import genforge.train.trainer` the name `genforge.train` is the package, not
the function, whatever `genforge/__init__.py` set. Giving the package's module object a
`__call__` that forwards to the API function makes both readings work: `genforge.train(...)`
trains, `genforge.train.trainer` is the module.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


def make_callable(module_name: str, target: str) -> None:
    """Calling module `module_name` calls `target` ("package.module:function"), imported then."""
    where, _, attr = target.partition(":")

    class _CallableModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return getattr(importlib.import_module(where), attr)(*args, **kwargs)

    _CallableModule.__call__.__doc__ = f"Calls {target} (the stage's Python API function)."
    sys.modules[module_name].__class__ = _CallableModule
