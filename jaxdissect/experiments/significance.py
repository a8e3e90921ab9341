"""Findings with statistical support: each experiment decides whether the paper's
finding holds on its own numbers, from an interval that excludes the criterion.

A ``Finding`` is one sentence (HTML, as pages show it), whether it holds, the
estimate with its two-sided interval (or a p-value), the range the estimate can
take (``bounds``: every interval lies inside it), the criterion and the sample size
it rests on. Before it is tested, a finding checks that it means something on this
model (a classifier above chance, a concept that is present, units whose labels are
significant, contexts with enough edits); when not, it ``applies`` not, holds not,
and says why (``reason``). Each says whether its comparison is the paper's
(``PREREGISTERED``) or chosen by looking at the data (``EXPLORATORY``, corrected
for the choice). The intervals used:

* ``t_interval``: the mean of paired per-sample values (Student's t);
* ``wilson_interval``: a proportion's score interval (Wilson), within [0, 1];
* ``bootstrap_interval``: percentiles of Poisson-bootstrap replicates (within
  the statistic's range, like every replicate)
  (``poisson_weights`` gives each example an integer weight per replicate,
  drawn from its global index, so every device, host and batch size weighs an
  example alike and the replicates' counts are exact sums);
* ``sign_flip_p``: the exact chance that a mean of paired per-sample changes
  lies as far in one direction when each change's sign is flipped at random
  (the changes are symmetric about 0 when the edit does nothing);
* ``added_ratio``: how many times as much one amount added is as another (a
  negative amount adds nothing), within [0, inf] like each replicate;
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
#: a finding's comparison is the paper's, fixed before looking at the data
PREREGISTERED = "pre-registered"
#: a finding's comparison was picked by looking at the data (corrected for it)
EXPLORATORY = "exploratory"
#: the range of a share, a proportion or an accuracy
UNIT_RANGE = (0.0, 1.0)
#: no bounds (a difference, a fraction of a way that can overshoot)
ANY_RANGE = (-math.inf, math.inf)


@dataclasses.dataclass(frozen=True)
class Finding:
    """One finding: ``text`` (HTML), ``holds``, ``estimate`` with ``[low, high]`` at
    ``level`` (or ``p_value``), the ``criterion`` it is tested against and the
    number of ``samples`` it rests on; ``bounds``: the range the estimate can take;
    ``kind``: ``PREREGISTERED`` or ``EXPLORATORY``; ``applies`` False (then
    ``holds`` is False) with ``reason`` when the finding means nothing here."""

    text: str
    holds: bool
    estimate: float
    low: float
    high: float
    criterion: float
    samples: int
    level: float = LEVEL
    p_value: float | None = None
    bounds: tuple = ANY_RANGE
    kind: str = PREREGISTERED
    applies: bool = True
    reason: str = ""

    def __post_init__(self):
        if self.kind not in (PREREGISTERED, EXPLORATORY):
            raise ValueError(f"a finding is {PREREGISTERED} or {EXPLORATORY}, not "
                             f"{self.kind!r}")
        if not self.applies:
            if not self.reason:
                raise ValueError("a finding that does not apply needs its reason")
            object.__setattr__(self, "holds", False)
        object.__setattr__(self, "holds", bool(self.holds))
        object.__setattr__(self, "bounds", tuple(float(b) for b in self.bounds))

    @classmethod
    def not_applicable(cls, text: str, reason: str, *, samples: int = 0,
                       criterion: float = math.nan, bounds=ANY_RANGE,
                       kind: str = PREREGISTERED) -> "Finding":
        """A finding whose test means nothing on this model: ``text`` says what it
        would test, ``reason`` why it cannot."""
        return cls(text, False, math.nan, math.nan, math.nan, criterion, samples,
                   bounds=bounds, kind=kind, applies=False, reason=reason)

    @property
    def status(self) -> str:
        """"holds", "does not hold" or "not applicable"."""
        if not self.applies:
            return "not applicable"
        return "holds" if self.holds else "does not hold"

    def in_bounds(self) -> bool:
        """Whether the estimate and its interval lie within ``bounds`` (NaN and
        infinite ends of an open interval aside)."""
        lo, hi = self.bounds
        return all(not math.isfinite(v) or lo - 1e-12 <= v <= hi + 1e-12
                   for v in (self.estimate, self.low, self.high))

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["bounds"] = [b if math.isfinite(b) else None for b in self.bounds]
        d["status"] = self.status
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in d.items()}

    def sentence(self) -> str:
        """The HTML sentence as shown: kind, then the text, then why it does not
        apply."""
        why = f" <b>Not applicable:</b> {self.reason}" if not self.applies else ""
        return f"<i>[{self.kind}]</i> {self.text}{why}"

    def plain(self) -> str:
        """The sentence without markup, its status and kind, for a terminal."""
        text = self.text.replace("<b>", "").replace("</b>", "")
        why = f" Not applicable: {self.reason}" if not self.applies else ""
        return f"[{self.status}] ({self.kind}) {text}{why}"


def wilson_interval(hits: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """``(low, high)``: the Wilson score interval of a proportion ``hits / n``
    (within [0, 1]); ``(0, 1)`` when ``n`` is 0."""
    if n <= 0:
        return 0.0, 1.0
    z = bonferroni_z(level)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


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


def added_ratio(numerator, denominator):
    """How many times ``numerator`` is ``denominator`` as amounts added (arrays or
    floats): ``max(n, 0) / max(d, 0)``, 0 where ``n <= 0`` (nothing added, whatever
    the other), inf where only ``d <= 0``. Within [0, inf], so the percentile
    interval of its replicates is too."""
    n = np.asarray(numerator, np.float64)
    d = np.asarray(denominator, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(n <= 0, 0.0, np.where(d <= 0, np.inf, n / np.where(d > 0, d, 1.0)))
    return float(r) if r.ndim == 0 else r


def sign_flip_p(values, alternative: str, resamples: int = 10_000, seed: int = 0) -> float:
    """One-sided p-value that the mean of paired changes ``values [n]`` is below
    (``alternative="less"``) or above (``"greater"``) 0: the share of the ``2 ** n``
    sign patterns whose mean lies at least as far that way, the observed one
    included (exact up to ``n = 16``; above, ``resamples`` random patterns drawn from
    ``seed``, ``p = (1 + hits) / (1 + resamples)``). Exact under the null that each
    change is symmetric about 0; the smallest p-value is ``2 ** -n``."""
    if alternative not in ("less", "greater"):
        raise ValueError(f"alternative must be 'less' or 'greater', got {alternative!r}")
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        return 1.0
    if alternative == "greater":
        v = -v
    if v.size <= 16:
        signs = 1 - 2 * ((np.arange(2 ** v.size)[:, None] >> np.arange(v.size)) & 1)
        extra = 0
    else:
        signs = np.random.default_rng(seed).choice([-1, 1], (resamples, v.size))
        extra = 1
    sums = signs @ v
    tol = 1e-9 * max(float(np.abs(v).sum()), 1.0)
    return float((extra + np.sum(sums <= v.sum() + tol)) / (extra + len(signs)))


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
