"""Helpers of the pipeline tests: a second world segmenter with the same labels, and a
counter of the sweeps that run (model passes over data)."""

from __future__ import annotations

import contextlib


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
