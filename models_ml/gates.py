"""Refresh gates: the rules a newly trained model must pass before what it produces
replaces the published table (the paper's production follow-up halts its lookup refresh
below a 90% match rate or a recall floor). Pure functions over the models' own figures;
the thresholds come from models_ml.config (IE_GATE_*). The adapter's rule (it learned the
clusters' names) runs as a blocking asset check; the recall rule judges the lookup as it
would be served, inside the lookup asset before it writes, since what reaches users is the
lookup and not the adapter alone."""

from __future__ import annotations

from dataclasses import dataclass

from models_ml import config


@dataclass(frozen=True)
class GateResult:
    passed: bool
    failures: tuple[str, ...]  # one sentence per broken rule
    figures: dict[str, float]  # what the rules compared, for the check's metadata

    def summary(self) -> str:
        return "; ".join(self.failures) if self.failures else "every rule passed"


def finetune_gate(match_rate: float, min_match_rate: float | None = None) -> GateResult:
    """A fine-tuned adapter may go on to pair inference when its unconstrained match rate
    is at least ``min_match_rate`` (default IE_GATE_MATCH_RATE): it names clusters, not
    something near them. A NaN figure (a diverged model) fails."""
    min_match = config.gate_min_match_rate() if min_match_rate is None else min_match_rate
    failures = () if match_rate >= min_match else (f"match rate {match_rate:.3f} below {min_match:.3f}",)
    return GateResult(not failures, failures, {"match_rate": match_rate, "min_match_rate": min_match})


def lookup_gate(recall: float, popularity_recall: float, m: int = 5, recall_margin: float | None = None) -> GateResult:
    """A new lookup may replace the published one when its recall@m on the eval split is
    at least the popularity baseline's on the same transitions plus ``recall_margin``
    (default IE_GATE_RECALL_MARGIN). It judges the rows that would be served: the adapter's
    own recall on its small eval sample is the seed's noise (ml-latest-small: 3 of 5 seeds
    below popularity there, all 5 lookups 3 to 5 points above it). It decides publish or
    keep, and chooses nothing. A NaN figure fails."""
    margin = config.gate_recall_margin() if recall_margin is None else recall_margin
    failures = ()
    if not recall - popularity_recall >= margin - 1e-12:
        failures = (f"recall@{m} {recall:.3f} below popularity's {popularity_recall:.3f}"
                    + (f" {margin:+.3f}" if margin else ""),)
    figures = {f"recall_at_{m}": recall, f"popularity_recall_at_{m}": popularity_recall, "recall_margin": margin}
    return GateResult(not failures, failures, figures)


def ranker_gate(ndcg: float, popularity_ndcg: float, k: int = 10, margin: float | None = None) -> GateResult:
    """A sequence recommender may refresh the slates when its NDCG@k is above
    popularity's plus ``margin`` (default IE_GATE_NDCG_MARGIN)."""
    margin = config.gate_ndcg_margin() if margin is None else margin
    failures = []
    if not ndcg - popularity_ndcg > margin:
        failures.append(f"NDCG@{k} {ndcg:.4f} not above popularity's {popularity_ndcg:.4f}"
                        + (f" {margin:+.4f}" if margin else ""))
    return GateResult(not failures, tuple(failures),
                      {f"ndcg_at_{k}": ndcg, f"popularity_ndcg_at_{k}": popularity_ndcg, "ndcg_margin": margin})
