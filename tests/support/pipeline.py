"""Helpers of the pipeline tests: a second world segmenter with the same labels, a
counter of the sweeps that run (model passes over data), a counter of the model's
executions, and the files a results folder holds."""

from __future__ import annotations

import contextlib
import os

import jax


def other_world_segmenter():
    """The shipped world segmenter with its head's biases scrambled: the same labels
    and type, other weights (so other segmentations)."""
    from jaxdissect.world.segmenter import WorldSegmenter, load_segmenter
    seg = load_segmenter()
    params = dict(seg.params)
    head = dict(params["head"])
    head["bias"] = head["bias"][::-1] * 3.0
    params["head"] = head
    return WorldSegmenter(seg.net, params, seg.size)


@contextlib.contextmanager
def counting_sweeps(monkeypatch):
    """Yields a list that gets the name of every sweep that runs over data (a model
    pass; sweeps served whole from a cache do not run)."""
    from jaxdissect.runtime import sweep
    ran: list[str] = []
    real = sweep._run

    def counted(*args, **kwargs):
        ran.append(args[-1])   # the progress description: the sweep's name
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "_run", counted)
    yield ran


@contextlib.contextmanager
def counting_model_calls(monkeypatch):
    """Yields a list that grows by one each time a model (through ``taps.run``: the
    world classifier and generator) or the world segmenter is applied, counted when
    the compiled program runs. Compiled programs are cleared on entry and exit, so
    none made without the counter is reused."""
    from jaxdissect import taps
    from jaxdissect.world.segmenter import WorldSegmenter
    calls: list[str] = []
    real_run, real_segment = taps.run, WorldSegmenter.__call__

    def counted(name, real):
        def call(*args, **kwargs):
            out = real(*args, **kwargs)
            jax.debug.callback(lambda: calls.append(name))
            return out
        return call

    jax.clear_caches()
    monkeypatch.setattr(taps, "run", counted("model", real_run))
    monkeypatch.setattr(WorldSegmenter, "__call__", counted("segmenter", real_segment))
    try:
        yield calls
    finally:
        monkeypatch.setattr(taps, "run", real_run)
        monkeypatch.setattr(WorldSegmenter, "__call__", real_segment)
        jax.clear_caches()


def written(folder) -> dict[str, bytes]:
    """Every file of a results folder but its caches, by relative path."""
    files = {}
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "cache"]
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = f.read()
    return files


def assert_identical(first: dict, again: dict) -> None:
    assert sorted(again) == sorted(first)
    assert [p for p in first if again[p] != first[p]] == []
