"""Honest differences between experiments over seeds: mean ± sd, Welch's t interval, seeds needed.

A notebook that compares single runs reads a few tenths of a percent as a finding when seed noise
alone moves a CIFAR-LT result by ±0.5–1.0 points. Here a difference of two experiments' means comes
with a 95 % Welch interval (unequal variances, Welch–Satterthwaite degrees of freedom); an interval
that spans 0 is "within noise", and with one seed on either side there is no spread to judge by, so
it says "1 seed" instead. ``seeds_needed`` turns the observed spread into the number of seeds per
experiment that would separate the two at the observed difference.

Standard library only (no scipy): the Student-t quantile comes from the regularised incomplete beta
function, evaluated by its continued fraction and inverted by bisection.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

LEVEL = 0.95
SEEDS_CAP = 1000  # seeds_needed answers "more than this" beyond it

WITHIN_NOISE = "within noise"
SEPARATED = "separated"
ONE_SEED = "1 seed"


# --------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class Summary:
    """Values of one experiment over its seeds: mean, sample sd (None below two values), n."""

    mean: float | None
    sd: float | None
    n: int


def summarize(values: Iterable[float | None]) -> Summary:
    """Mean and sample standard deviation (n - 1) of the values that are not None."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return Summary(None, None, 0)
    mean = math.fsum(xs) / len(xs)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return Summary(mean, sd, len(xs))


# --------------------------------------------------------------------------- Student t


_TINY = 1e-300
_EPS = 1e-15


def _beta_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of I_x(a, b): 1 / (1 + d1 / (1 + d2 / (1 + ...))), modified Lentz."""
    # Lentz's recurrences: c and d carry the ratios of successive convergents' numerators and
    # denominators; the first term d1 = -(a + b) x / (a + 1) starts them.
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    f = d
    for m in range(1, 10_000):
        # even term d_{2m}, then odd term d_{2m+1}
        for coeff in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + coeff * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + coeff / c
            c = c if abs(c) > _TINY else _TINY
            f *= c * d
        if abs(c * d - 1.0) < _EPS:
            break
    return f


def incomplete_beta(x: float, a: float, b: float) -> float:
    """The regularised incomplete beta function I_x(a, b) for 0 <= x <= 1, a, b > 0."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    # The fraction converges fast only below the mean of the beta distribution: use the symmetry
    # I_x(a, b) = 1 - I_{1-x}(b, a) above it.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(x, a, b) / a
    return 1.0 - front * _beta_fraction(1.0 - x, b, a) / b


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` > 0 degrees of freedom (math.inf: the normal)."""
    if math.isinf(df) or df > 1e7:
        return normal_cdf(t)
    tail = 0.5 * incomplete_beta(df / (df + t * t), df / 2.0, 0.5)  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on ``t_cdf``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# --------------------------------------------------------------------------- Welch interval


def welch_df(sd_a: float, n_a: int, sd_b: float, n_b: int) -> float:
    """Welch–Satterthwaite degrees of freedom of the difference of two means (both n >= 2).

    (va + vb)^2 / (va^2 / (n_a - 1) + vb^2 / (n_b - 1)) with v = sd^2 / n. Both spreads zero leave
    it undefined; the pooled n_a + n_b - 2 is returned then (the interval is 0 wide anyway).
    """
    va, vb = sd_a * sd_a / n_a, sd_b * sd_b / n_b
    denominator = va * va / (n_a - 1) + vb * vb / (n_b - 1)
    if denominator == 0.0:
        return float(n_a + n_b - 2)
    return (va + vb) ** 2 / denominator


@dataclass(frozen=True)
class Delta:
    """The difference of an experiment's mean to its baseline's, and how far to trust it."""

    delta: float
    half_width: float | None  # of the ``level`` interval; None with one seed on either side
    df: float | None
    n: int  # the experiment's seeds
    n_base: int  # the baseline's seeds
    level: float = LEVEL

    @property
    def verdict(self) -> str:
        if self.half_width is None:
            return ONE_SEED
        return WITHIN_NOISE if abs(self.delta) <= self.half_width else SEPARATED

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.delta - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.delta + self.half_width


def delta_interval(exp: Summary, base: Summary, level: float = LEVEL) -> Delta | None:
    """``exp.mean - base.mean`` with its Welch interval; None when either side has no value."""
    if exp.mean is None or base.mean is None or exp.n < 1 or base.n < 1:
        return None
    delta = exp.mean - base.mean
    if exp.n < 2 or base.n < 2 or exp.sd is None or base.sd is None:
        return Delta(delta, None, None, exp.n, base.n, level)
    df = welch_df(exp.sd, exp.n, base.sd, base.n)
    se = math.sqrt(exp.sd**2 / exp.n + base.sd**2 / base.n)
    half = t_quantile(0.5 + level / 2.0, df) * se
    return Delta(delta, half, df, exp.n, base.n, level)


def format_delta(d: Delta, *, seeds: bool = False) -> str:
    """``+0.41 ± 0.63 (within noise)``, ``+1.20 ± 0.35``, or ``+0.4 (1 seed)``.

    One seed gets one decimal: the second would claim a precision a single run does not have.
    ``seeds`` adds how many runs each side has, for a line that has no ``n`` column beside it.
    """
    if d.half_width is None:
        return f"{d.delta:+.1f} ({ONE_SEED})"
    text = f"{d.delta:+.2f} ± {d.half_width:.2f}"
    notes = [WITHIN_NOISE] if d.verdict == WITHIN_NOISE else []
    if seeds:
        notes.append(f"{d.n} vs {d.n_base} seeds")
    return text + (f" ({'; '.join(notes)})" if notes else "")


# --------------------------------------------------------------------------- seeds needed


@dataclass(frozen=True)
class SeedsNeeded:
    """Seeds per experiment that would separate two experiments, or why none would."""

    seeds: int | None  # None: see ``reason``
    reason: str = ""  # "cannot separate ...", "more than 1000", "needs a spread ..."
    pooled_sd: float | None = None

    def text(self) -> str:
        return f"{self.seeds} per experiment" if self.seeds is not None else self.reason


def pooled_sd(a: Summary, b: Summary) -> float | None:
    """The pooled standard deviation of two samples (None when neither has two values)."""
    dof = max(a.n - 1, 0) + max(b.n - 1, 0)
    if dof == 0:
        return None
    ss = (a.n - 1) * (a.sd or 0.0) ** 2 + (b.n - 1) * (b.sd or 0.0) ** 2
    return math.sqrt(ss / dof)


def seeds_needed(a: Summary, b: Summary, level: float = LEVEL, cap: int = SEEDS_CAP) -> SeedsNeeded:
    """The smallest n (seeds for each experiment) whose interval half-width is below |Δ|.

    At the observed pooled spread s and n seeds a side, the interval of the difference of means
    is Δ ± t_{(1+level)/2}(2n - 2) · s · sqrt(2 / n); the answer is the first n >= 2 where that
    half-width is strictly below the observed |Δ|. A zero Δ is never separated by more seeds.
    """
    if a.mean is None or b.mean is None:
        return SeedsNeeded(None, "no results to compare")
    delta = abs(a.mean - b.mean)
    spread = pooled_sd(a, b)
    if delta == 0.0:
        return SeedsNeeded(None, "cannot separate: the means are equal", spread)
    if spread is None:
        return SeedsNeeded(None, "needs 2 seeds of one experiment to measure the spread")
    if spread == 0.0:
        return SeedsNeeded(2, "", spread)  # no spread at all: any interval excludes 0
    q = 0.5 + level / 2.0
    # t > z, so no n below the normal approximation's answer 2 (z s / Δ)^2 can do: start there.
    z = t_quantile(q, math.inf)
    bound = 2.0 * (z * spread / delta) ** 2
    start = 2 if bound < 2 else cap + 1 if bound > cap else math.floor(bound)
    for n in range(start, cap + 1):
        if t_quantile(q, 2 * n - 2) * spread * math.sqrt(2.0 / n) < delta:
            return SeedsNeeded(n, "", spread)
    return SeedsNeeded(None, f"more than {cap}", spread)
