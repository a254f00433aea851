"""``medtf.io.discover`` — kept importable as a module *and* callable.

The implementation lives in :mod:`medtf.io.sources`. ``from medtf.io import discover`` gives the
function; ``from medtf.io.discover import discover, read_unit`` works too. Importing this module
rebinds the package attribute ``medtf.io.discover`` to the module, so the module itself is made
callable (same signature as :func:`medtf.io.sources.discover`) and both spellings keep working.
"""

from __future__ import annotations

import sys
import types

from medtf.io.sources import KINDS, MODES, classify, discover, read_unit  # noqa: F401


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return discover(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
