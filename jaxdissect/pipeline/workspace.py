"""The results folder of a run, and the identity of every cache in it.

A :class:`Workspace` is a folder being written (``runtime.outdir``: a staging folder
swapped into place when the run succeeds, its ``cache`` folders kept when it fails or is
re-run). Its parts are sub-folders (``ws.part("dissect")``), each with its own
``cache/``. :meth:`Workspace.cache` is the only way the pipeline caches: it builds the
cache's identity from the complete resolved run (the model's weights fingerprint and
settings, the layer, the data's identity, the segmenter's identity and weights, every
setting), so a re-run with anything changed never reads another run's sweeps, and a
re-run of the same run reuses every one of them.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from jaxdissect.runtime.cache import RunCache, run_cache

CACHE = "cache"


class Workspace:
    """``folder``: where files are written now; ``final``: where they will be once the
    folder is swapped in (the same folder when nothing is staged)."""

    def __init__(self, folder: str, final: str | None = None):
        self.folder = os.path.abspath(folder)
        self.final = os.path.abspath(final or folder)

    def part(self, name: str) -> "Workspace":
        """The sub-folder ``name`` (its own caches and pages)."""
        return Workspace(os.path.join(self.folder, name), os.path.join(self.final, name))

    def path(self, *names: str) -> str:
        """A file in this folder (created on demand), where it is written now."""
        os.makedirs(self.folder, exist_ok=True)
        return os.path.join(self.folder, *names)

    def final_path(self, path: str) -> str:
        """``path`` (written under this folder) as it will be once swapped in."""
        path = os.path.abspath(path)
        if path == self.folder or path.startswith(self.folder + os.sep):
            return self.final + path[len(self.folder):]
        return path

    def cache(self, *, model: Any, layer: str, data: Any, segmenter: Any,
              **settings: Any) -> RunCache:
        """The cache of this part for the complete run (``runtime.cache.run_cache``)."""
        return run_cache(os.path.join(self.folder, CACHE), model=model, layer=layer,
                         data=data, segmenter=segmenter, **settings)


@contextlib.contextmanager
def open_workspace(out: str, command: str, force: bool = False) -> Iterator[Workspace]:
    """The workspace of ``command``'s results in ``out``: written aside, swapped in when
    the block succeeds, ``out`` left as it was if it fails (``runtime.outdir``); a folder
    of another command only with ``force``."""
    from jaxdissect.runtime import outdir
    with outdir.results_folder(out, command, force) as staging:
        yield Workspace(staging, out)
