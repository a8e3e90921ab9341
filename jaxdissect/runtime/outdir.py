"""Results folders that are never half-written and never mix two runs.

A command writes its results through :func:`results_folder`::

    with outdir.results_folder(args.out, "ablate", force=args.force) as out:
        ... write every file under out ...

or, inside a command's ``run`` decorated with :func:`writes_results`, through
``out = open_results(args.out, "ablate", args.force)``: the folder is swapped in when
``run`` returns (and left as it was if it raises); :func:`final_path` names a
written file by where it will be.

* The files are written into ``OUT.partial`` (a sibling), then swapped into place:
  ``OUT`` is renamed aside, ``OUT.partial`` renamed to ``OUT``, the old folder
  removed. A run that fails or is killed leaves ``OUT`` exactly as it was; its
  ``OUT.partial`` is reused by the next run (every ``cache/`` folder in it, at any
  depth, survives: ``OUT.partial/dissect/cache``, ``OUT.partial/ablate/cache``, ...).
* The caches of the previous run (every ``cache/`` folder under ``OUT``) are
  hard-linked (copied where links are not possible) into the new folder first, so a
  re-run reuses them. Their files are named by the complete run's identity
  (``runtime.cache.run_cache``), so a run never reads another's results.
* ``OUT/.jaxdissect.json`` records which command wrote the folder. A command refuses a
  non-empty ``OUT`` written by another command, or holding files jaxdissect did not
  write, unless ``force`` (``--force``): ``ablate --out`` pointed at a demo folder
  does not replace the demo's index.
* A read-only location, a full disk or a path under a file: one line,
  :class:`~jaxdissect.errors.UserError`.

Only the writing process (``runtime.hosts.is_writer``) swaps; others only stage.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import functools
import json
import os
import shutil
from typing import Callable, Iterator

MARKER = ".jaxdissect.json"
CACHE = "cache"
_WRITE_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is full",
                 errno.EROFS: "the location is read-only", errno.EACCES: "permission denied",
                 errno.EPERM: "permission denied", errno.ENOTDIR: "a part of the path is a file",
                 errno.EEXIST: "a file is in the way"}


def _user_error(message: str) -> Exception:
    from jaxdissect.errors import UserError
    return UserError(message)


def _describe(e: OSError) -> str:
    why = _WRITE_ERRORS.get(e.errno, e.strerror or type(e).__name__)
    where = f" ({e.filename})" if e.filename else ""
    return f"{why}{where}"


def owner(path: str) -> str | None:
    """The command recorded in ``path``'s marker, or None."""
    try:
        with open(os.path.join(path, MARKER)) as f:
            return str(json.load(f).get("command"))
    except (OSError, ValueError, AttributeError):
        return None


def check_target(out: str, command: str, force: bool = False) -> None:
    """Refuse ``out`` if it is a file, sits under a file, or holds results that are
    not this command's (unless ``force``)."""
    out = os.path.abspath(out)
    probe = out
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if probe != out and not os.path.isdir(probe):
        raise _user_error(f"cannot write results to {out}: {probe} is a file, not a folder")
    if os.path.exists(out) and not os.path.isdir(out):
        raise _user_error(f"cannot write results to {out}: it is a file, not a folder")
    if force or not os.path.isdir(out):
        return
    entries = [e for e in os.listdir(out) if e != MARKER]
    if not entries:
        return
    who = owner(out)
    if who == command:
        return
    held = f"results of `jaxdissect {who}`" if who else "files not written by jaxdissect"
    raise _user_error(f"{out} holds {held}; `jaxdissect {command}` would replace them: "
                      f"choose another --out or pass --force")


def _link_tree(src: str, dst: str) -> None:
    """Hard-link (or copy) every file under ``src`` into ``dst`` where ``dst`` lacks it."""
    for root, _dirs, files in os.walk(src):
        target = os.path.join(dst, os.path.relpath(root, src))
        os.makedirs(target, exist_ok=True)
        for name in files:
            a, b = os.path.join(root, name), os.path.join(target, name)
            if os.path.exists(b):
                continue
            try:
                os.link(a, b)
            except OSError:
                shutil.copy2(a, b)


def _cache_dirs(root: str) -> Iterator[str]:
    """Every folder named ``cache`` under ``root`` (``root/cache``, ``root/ablate/cache``,
    ...), relative to ``root``; nothing below a cache is searched."""
    for here, dirs, _files in os.walk(root):
        for name in list(dirs):
            if name == CACHE and not os.path.islink(os.path.join(here, name)):
                dirs.remove(name)
                yield os.path.relpath(os.path.join(here, name), root)


def _keep_caches_only(root: str) -> None:
    """Removes everything under ``root`` except its ``cache`` folders (at any depth)."""
    for name in os.listdir(root):
        p = os.path.join(root, name)
        if os.path.isdir(p) and not os.path.islink(p):
            if name != CACHE:
                _keep_caches_only(p)
                if not os.listdir(p):
                    os.rmdir(p)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


def _stage(out: str) -> str:
    """``OUT.partial``: created, or kept from a failed run with only its caches (every
    ``cache`` folder, at any depth), plus the caches of ``OUT``'s previous run."""
    staging = out + ".partial"
    os.makedirs(staging, exist_ok=True)
    _keep_caches_only(staging)
    if os.path.isdir(out):
        for rel in list(_cache_dirs(out)):
            _link_tree(os.path.join(out, rel), os.path.join(staging, rel))
    return staging


def _swap(staging: str, out: str, command: str) -> None:
    with open(os.path.join(staging, MARKER), "w") as f:
        json.dump({"command": command}, f)
    old = None
    if os.path.exists(out):
        old = f"{out}.old-{os.getpid()}"
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except OSError:
        if old is not None:
            os.replace(old, out)  # put the previous results back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def results_folder(out: str, command: str, force: bool = False,
                   writer: bool | None = None) -> Iterator[str]:
    """Yield the folder to write ``command``'s results into; swap it into ``out`` when
    the block succeeds (see the module docstring). ``writer``: whether this process
    swaps (default: ``runtime.hosts.is_writer()``)."""
    out = os.path.abspath(out)
    check_target(out, command, force)
    if writer is None:
        from jaxdissect.runtime import hosts
        writer = hosts.is_writer()
    try:
        staging = _stage(out)
    except OSError as e:
        raise _user_error(f"cannot write results to {out}: {_describe(e)}") from None
    try:
        yield staging
        if writer:
            _swap(staging, out, command)
    except OSError as e:
        if e.errno in _WRITE_ERRORS:
            raise _user_error(f"cannot write results to {out}: {_describe(e)}; the "
                              f"previous contents of {out} are unchanged") from None
        raise


_SESSION: contextvars.ContextVar = contextvars.ContextVar("results_session", default=None)


def writes_results(run: Callable) -> Callable:
    """Decorate a command's ``run(args)``: the folders it opens with
    :func:`open_results` are swapped in when it returns, left as they were if it
    raises."""
    @functools.wraps(run)
    def wrapped(*args, **kwargs):
        with contextlib.ExitStack() as stack:
            token = _SESSION.set((stack, {}))
            try:
                return run(*args, **kwargs)
            finally:
                _SESSION.reset(token)
    return wrapped


def open_results(out: str, command: str, force: bool = False) -> str:
    """The staging folder to write ``out``'s results into, within :func:`writes_results`."""
    session = _SESSION.get()
    if session is None:
        raise RuntimeError("open_results needs a run decorated with writes_results")
    stack, finals = session
    staging = stack.enter_context(results_folder(out, command, force))
    finals[staging] = os.path.abspath(out)
    return staging


def final_path(path: str) -> str:
    """``path`` (written under a staging folder) as it will be once swapped in."""
    path = os.path.abspath(path)
    session = _SESSION.get()
    for staging, out in (session[1].items() if session else ()):
        if path == staging or path.startswith(staging + os.sep):
            return out + path[len(staging):]
    return path
