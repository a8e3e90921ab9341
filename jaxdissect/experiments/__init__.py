"""The experiments of the method: each a step, a statistic, a typed result and its findings.

``dissect`` (unit labels), ``ablate`` (classifier units removed / kept), ``intervene``
(generator units removed / inserted), ``attack`` (adversarial attacks seen through
units) and ``paint`` (painting with units).
"""
