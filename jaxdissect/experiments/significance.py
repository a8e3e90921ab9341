"""Findings with statistical support: each experiment decides whether the paper's
finding holds on its own numbers, from an interval that excludes the criterion.

A ``Finding`` is one sentence (HTML, as pages show it), whether it holds, the
estimate with its two-sided interval (or a p-value), the criterion and the sample
size it rests on. The intervals used:

* ``t_interval``: the mean of paired per-sample values (Student's t);
* ``bootstrap_interval``: percentiles of Poisson-bootstrap replicates
  (``poisson_weights`` gives each example an integer weight per replicate,
  drawn from its global index, so every device, host and batch size weighs an
  example alike and the replicates' counts are exact sums);
* ``bonferroni_z``: the normal quantile when the reported case was picked
  among ``m`` (the best of several set sizes, the extreme pair of contexts);
* ``overlap_p``: the hypergeometric chance of an overlap at least as large
  between two unit sets of the given sizes.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

#: the confidence level of every interval on the pages
LEVEL = 0.99


@dataclasses.dataclass(frozen=True)
class Finding:
    """One finding: ``text`` (HTML), ``holds``, ``estimate`` with ``[low, high]`` at
    ``level`` (or ``p_value``), the ``criterion`` it is tested against and the
    number of ``samples`` it rests on."""

    text: str
    holds: bool
    estimate: float
    low: float
    high: float
    criterion: float
    samples: int
    level: float = LEVEL
    p_value: float | None = None

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in d.items()}

    def plain(self) -> str:
        """The sentence without markup, and whether it holds, for a terminal."""
        text = self.text.replace("<b>", "").replace("</b>", "")
        return ("[holds] " if self.holds else "[does not hold] ") + text


def bonferroni_z(level: float = LEVEL, comparisons: int = 1) -> float:
    """Two-sided normal quantile for ``level``, split over ``comparisons`` cases."""
    from scipy.stats import norm
    return float(norm.ppf(1 - (1 - level) / (2 * max(comparisons, 1))))


def t_interval(values, level: float = LEVEL) -> tuple[float, float, float]:
    """``(mean, low, high)`` of ``values [n]`` (Student's t, ``n - 1`` degrees);
    ``(mean, -inf, inf)`` with fewer than two values."""
    from scipy.stats import t
    v = np.asarray(values, np.float64).ravel()
    mean = float(v.mean()) if v.size else math.nan
    if v.size < 2:
        return mean, -math.inf, math.inf
    half = float(t.ppf(1 - (1 - level) / 2, v.size - 1)) * float(v.std(ddof=1)) / \
        math.sqrt(v.size)
    return mean, mean - half, mean + half


def bootstrap_interval(replicates, level: float = LEVEL) -> tuple[float, float]:
    """``(low, high)``: the percentile interval of ``replicates [B]`` (NaN ignored)."""
    r = np.asarray(replicates, np.float64)
    r = r[np.isfinite(r)]
    if r.size < 2:
        return -math.inf, math.inf
    lo, hi = np.quantile(r, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def poisson_weights(index, replicates: int, seed: int = 0):
    """``[b, replicates]`` int32 Poisson(1) weights of the examples ``index [b]``
    (global example indices): a function of the index alone (JAX)."""
    import jax
    import jax.numpy as jnp
    key = jax.random.PRNGKey(seed)

    def one(i):
        return jax.random.poisson(jax.random.fold_in(key, i), 1.0, (replicates,), jnp.int32)

    return jax.vmap(one)(jnp.asarray(index, jnp.int32))


def overlap_p(overlap: int, size_a: int, size_b: int, population: int) -> float:
    """P(|A & B| >= overlap) for a random ``size_a``-set and a fixed ``size_b``-set
    among ``population`` (hypergeometric upper tail); 1.0 when a set is empty."""
    if size_a == 0 or size_b == 0:
        return 1.0
    total = math.comb(population, size_a)
    tail = sum(math.comb(size_b, j) * math.comb(population - size_b, size_a - j)
               for j in range(overlap, min(size_a, size_b) + 1))
    return tail / total


def pct(v) -> str:
    """A fraction as a percentage for a sentence; "n/a" for None/NaN/inf."""
    if v is None or not math.isfinite(float(v)):
        return "n/a"
    return f"{float(v):.1%}"
