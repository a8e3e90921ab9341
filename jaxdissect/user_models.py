"""Loading a user's own object from a ``py:MODULE:NAME`` spec.

``MODULE`` is imported as ``python -m`` would find it: the current directory first,
then ``sys.path`` (the ``jaxdissect`` script, unlike ``python -m``, does not put the
current directory on the path). Each way this can go wrong is one line naming it: the
spec's form, a module that does not exist, an exception raised while the module is
imported or while ``NAME()`` runs (its type and message), a module without ``NAME``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys

from jaxdissect.errors import UserError


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def import_from_cwd(module: str, what: str):
    """``importlib.import_module(module)`` with the current directory searched first;
    a ``UserError`` naming a missing module or the exception raised inside it."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        parts = module.split(".")
        if e.name in {".".join(parts[:i]) for i in range(1, len(parts) + 1)}:
            raise UserError(f"{what}: no module named {module!r} (looked in the current "
                            f"directory {cwd} and on the Python path)") from None
        raise UserError(f"{what}: importing {module!r} failed: {_one_line(e)}") from None
    except Exception as e:  # anything the user's module raises while it is imported
        raise UserError(f"{what}: importing {module!r} failed: {_one_line(e)}") from None
    finally:
        if added:
            try:
                sys.path.remove(cwd)
            except ValueError:
                pass


def load_object(text: str, what: str, call=None):
    """The object ``py:MODULE:NAME`` names, or ``NAME()`` where ``call(obj)`` is true
    (default: for a plain function)."""
    body = text[3:] if text.startswith("py:") else text
    module, sep, name = body.rpartition(":")
    if not sep or not module or not name:
        raise UserError(f"{what} {text!r}: expected py:MODULE:NAME")
    mod = import_from_cwd(module, f"{what} {text!r}")
    if not hasattr(mod, name):
        raise UserError(f"{what} {text!r}: module {module!r} ({getattr(mod, '__file__', '')}) "
                        f"has no {name!r}")
    obj = getattr(mod, name)
    if (call or inspect.isroutine)(obj):
        try:
            obj = obj()
        except Exception as e:  # the user's factory failed: say so, in one line
            raise UserError(f"{what} {text!r}: {name}() raised {_one_line(e)}") from None
    return obj
