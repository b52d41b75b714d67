"""`python -m models_ml.cli.report [--out DIR]`: the evaluation report of the current
warehouse, from lookup_evaluation and ml.finetune_history, as Markdown with PNG plots
(default folder: reports/<warehouse file stem>/, git-ignored).

Sections: the comparison at the default level and K in both split modes (the targets of
lookup_verdict, recall@m with 95% intervals, MRR, paired differences), recall@m curves
per policy, recall by how often the history was seen in train, the balance of the top-1
answers, serving coverage, the K x level table (the paper's open question), and the
fine-tuning curve.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from models_ml import config
from models_ml.plots import plot_finetune_curve
from models_ml import warehouse as wh

COUNT_POLICIES = config.count_policies()  # the count baselines the LLM must beat
POLICY_ORDER = ("llm", "zero_shot", *COUNT_POLICIES)
REPORT_FILE = "report.md"
RUNS_FILE = "evaluate_runs.json"  # `make evaluate`'s log of its runs, beside the report


@dataclass
class Report:
    path: Path
    images: dict[str, Path] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)  # flat numbers for asset metadata


def _policies(frame: pl.DataFrame) -> list[str]:
    present = frame["policy"].unique().to_list()
    return [p for p in POLICY_ORDER if p in present] + sorted(p for p in present if p not in POLICY_ORDER)


def _fmt(v, ci_low=None, ci_high=None) -> str:
    if v is None:
        return "-"
    if ci_low is None or ci_high is None:
        return f"{v:.3f}"
    return f"{v:.3f} [{ci_low:.3f}, {ci_high:.3f}]"


def _table(rows: list[list[str]], header: list[str]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _metric_table(ev: pl.DataFrame, metrics: list[str]) -> str:
    rows = []
    for policy in _policies(ev):
        cells = [policy]
        for metric in metrics:
            r = ev.filter((pl.col("policy") == policy) & (pl.col("metric") == metric))
            cells.append(_fmt(*r.select("value", "ci_low", "ci_high").row(0)) if r.height else "-")
        rows.append(cells)
    return _table(rows, ["policy", *metrics])


def _verdict_table(verdict: pl.DataFrame) -> str:
    rows = [[r["target"], "-" if r["m"] is None else str(r["m"]), _fmt(r["llm_value"]),
             f"{r['baseline']} {_fmt(r['baseline_value'])}", _fmt(r["diff"], r["ci_low"], r["ci_high"]),
             "yes" if r["met"] else "**no**"]
            for r in verdict.sort("target", "m", nulls_last=True).iter_rows(named=True)]
    return _table(rows, ["target", "m", "llm", "count policy", "llm - count policy (95% CI)", "met"])


def _plot_recall_curves(ev: pl.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for policy in _policies(ev):
        rows = ev.filter((pl.col("policy") == policy) & pl.col("metric").str.contains(r"^recall_at_\d+$"))
        if not rows.height:
            continue
        rows = rows.with_columns(pl.col("metric").str.extract(r"(\d+)$").cast(pl.Int32).alias("m")).sort("m")
        m, v = rows["m"].to_list(), rows["value"].to_list()
        lo, hi = rows["ci_low"].to_list(), rows["ci_high"].to_list()
        ax.errorbar(m, v, yerr=[[a - b for a, b in zip(v, lo)], [b - a for a, b in zip(v, hi)]], marker="o",
                    capsize=3, label=policy)
    ax.set_xlabel("m")
    ax.set_ylabel("novel-transition recall@m (95% CI)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def adapter_history(con, lookup_version: str) -> pl.DataFrame:
    """Every fine-tuning step of the adapter an llm lookup was decoded with (no rows when it
    has none): the lookup's model_version is the adapter's, or names it before a '+' (a
    fused or aligned lookup)."""
    adapter = lookup_version.split("+", 1)[0]
    return wh.query(con, f"select * from {config.FINETUNE_HISTORY} where model_version = ?", [adapter])


def _seen_order(metric: str) -> tuple[int, int]:
    """Segments by their lower bound, a segment before the wider one it starts
    (seen_0, seen_0_4, seen_1_4, seen_5_plus)."""
    parts = metric.split("__seen_")[1].split("_")
    return int(parts[0]), len(parts)


def _seen_label(metric: str) -> str:
    return metric.split("__")[1].replace("seen_", "seen ").replace("_plus", "+").replace("_", "-")


def _plot_by_seen(ev: pl.DataFrame, m: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ev.filter(pl.col("metric").str.starts_with(f"recall_at_{m}__seen_"))
    segments = sorted(rows["metric"].unique().to_list(), key=_seen_order)
    policies = _policies(rows)
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(policies), 1)
    for i, policy in enumerate(policies):
        vals, errs = [], [[], []]
        for seg in segments:
            r = rows.filter((pl.col("policy") == policy) & (pl.col("metric") == seg))
            v, lo, hi = r.select("value", "ci_low", "ci_high").row(0) if r.height else (0.0, 0.0, 0.0)
            vals.append(v)
            errs[0].append(v - (lo if lo is not None else v))
            errs[1].append((hi if hi is not None else v) - v)
        ax.bar([j + i * width for j in range(len(segments))], vals, width, yerr=errs, capsize=2, label=policy)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(segments))])
    ax.set_xticklabels([_seen_label(s) for s in segments])
    ax.set_ylabel(f"recall@{m} (95% CI)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_report(con, out_dir: Path | None = None) -> Report:
    """Write the report of the warehouse behind ``con`` into ``out_dir``."""
    out_dir = Path(out_dir or config.reports_dir())
    if not wh.table_exists(con, config.LOOKUP_EVALUATION):
        raise LookupError(f"{config.LOOKUP_EVALUATION} does not exist; materialize the evaluation assets first")
    ev_all = wh.read_table(con, config.LOOKUP_EVALUATION)
    if ev_all.height == 0:
        raise ValueError(f"{config.LOOKUP_EVALUATION} is empty; materialize the evaluation assets first")
    out_dir.mkdir(parents=True, exist_ok=True)
    level, k = config.llm_level(), config.history_len()
    report = Report(out_dir / REPORT_FILE)
    lines = [
        "# Does the LLM beat the count table?",
        "",
        f"Warehouse `{config.database_path()}`, written {dt.datetime.now().isoformat(timespec='seconds')}. "
        "Every figure comes from `lookup_evaluation` (eval transitions only; 95% bootstrap intervals over "
        "eval users, paired for differences) and `ml.finetune_history`.",
        "",
    ]
    default = ev_all.filter((pl.col("level") == level) & (pl.col("k") == k))
    verdicts = wh.read_table(con, config.LOOKUP_VERDICT).filter((pl.col("level") == level) & (pl.col("k") == k)) \
        if wh.table_exists(con, config.LOOKUP_VERDICT) else None
    for split_mode in config.SPLIT_MODES:
        ev = default.filter(pl.col("split_mode") == split_mode)
        if not ev.height:
            lines += [f"## Level {level}, K = {k}, split by {split_mode}", "", "(not evaluated)", ""]
            continue
        ms = sorted({int(m.rsplit("_", 1)[1]) for m in ev["metric"].to_list() if m.startswith("recall_at_") and "__" not in m})
        metrics = [f"recall_at_{m}" for m in ms] + ["mrr"]
        lines += [f"## Level {level}, K = {k}, split by {split_mode}", "",
                  f"{ev.filter(pl.col('metric') == 'mrr')['n'].max()} eval transitions.", ""]
        verdict = verdicts.filter(pl.col("split_mode") == split_mode) if verdicts is not None else None
        if verdict is not None and verdict.height:
            lines += ["Targets (`lookup_verdict`): recall@m at least the best count policy's (interval not wholly "
                      "below zero), above every count policy on the histories train saw fewest times (the metric's "
                      "segment), distinct top-1 at least markov's.", "", _verdict_table(verdict), ""]
            for r in verdict.iter_rows(named=True):
                key = r["target"] if r["m"] is None else f"{r['target']}_at_{r['m']}"
                report.figures[f"{split_mode}/verdict/{key}"] = float(r["met"])
        lines += [_metric_table(ev, metrics), ""]
        diffs = [m for m in ev.filter(pl.col("policy") == "llm")["metric"].unique().to_list()
                 if m.startswith("diff_") and "__" not in m]
        if diffs:
            baselines = sorted({m.split("_vs_")[1] for m in diffs})
            rows = []
            for b in baselines:
                cells = [f"llm - {b}"]
                for metric in metrics:
                    r = ev.filter((pl.col("policy") == "llm") & (pl.col("metric") == f"diff_{metric}_vs_{b}"))
                    cells.append(_fmt(*r.select("value", "ci_low", "ci_high").row(0)) if r.height else "-")
                rows.append(cells)
            lines += ["Paired differences (95% CI):", "", _table(rows, ["", *metrics]), ""]
        img = out_dir / f"recall_curves_{split_mode}.png"
        _plot_recall_curves(ev, img, f"level {level}, K = {k}, split by {split_mode}")
        report.images[f"recall_curves_{split_mode}"] = img
        m_seen = 5 if 5 in ms else (ms[0] if ms else None)
        if m_seen is not None:
            img = out_dir / f"recall_by_seen_{split_mode}.png"
            _plot_by_seen(ev, m_seen, img, f"recall@{m_seen} by how often the history was seen in train ({split_mode})")
            report.images[f"recall_by_seen_{split_mode}"] = img
            seen_metrics = sorted({m for m in ev["metric"].to_list() if m.startswith(f"recall_at_{m_seen}__seen_")},
                                  key=_seen_order)
            lines += [f"![recall curves]({f'recall_curves_{split_mode}.png'}) ![by history frequency]({f'recall_by_seen_{split_mode}.png'})",
                      "", _metric_table(ev, seen_metrics), ""]
        balance = ["distinct_top1", "top1_entropy", "top1_gini", "users_with_unconsumed_suggestion",
                   "users_with_unconsumed_in_top_5"]
        lines += ["Balance of the top-1 answers over every history, and serving coverage:", "",
                  _metric_table(ev, balance), ""]
        for row in ev.iter_rows(named=True):
            report.figures[f"{split_mode}/{row['policy']}/{row['metric']}"] = float(row["value"])
    # K x level
    user = ev_all.filter(pl.col("split_mode") == "user")
    grid = user.select("level", "k").unique().sort("level", "k")
    if grid.height:
        policies = _policies(user)
        rows = []
        for lv, kk in grid.iter_rows():
            block = user.filter((pl.col("level") == lv) & (pl.col("k") == kk))
            metric = "recall_at_5" if block.filter(pl.col("metric") == "recall_at_5").height else "mrr"
            cells = [str(lv), str(kk), metric]
            for p in policies:
                r = block.filter((pl.col("policy") == p) & (pl.col("metric") == metric))
                cells.append(_fmt(*r.select("value", "ci_low", "ci_high").row(0)) if r.height else "-")
            rows.append(cells)
        lines += ["## K x level (split by user)", "",
                  "recall@5, or MRR where a level has too few clusters for recall@5 to mean anything.", "",
                  _table(rows, ["level", "K", "metric", *policies]), ""]
    # fine-tuning curve of the shipped model
    llm_rows = default.filter((pl.col("policy") == "llm") & (pl.col("split_mode") == config.split_mode()))
    if wh.table_exists(con, config.FINETUNE_HISTORY) and llm_rows.height:
        hist = adapter_history(con, llm_rows["model_version"][0])
        if hist.height:
            img = out_dir / "finetune_curve.png"
            plot_finetune_curve(hist, img)
            report.images["finetune_curve"] = img
            lines += ["## Fine-tuning", "", f"Adapter `{hist['model_version'][0]}`, {int(hist['step'].max())} LoRA steps.",
                      "", "![fine-tuning curve](finetune_curve.png)", ""]
    steps = wh.query(con, f"select model_version, max(step) as steps from {config.FINETUNE_HISTORY} group by 1 order by 1") \
        if wh.table_exists(con, config.FINETUNE_HISTORY) else pl.DataFrame()
    if steps.height:
        lines += ["Adapters in this warehouse and their LoRA steps (comparison runs of `make evaluate` use "
                  "fewer steps than the default):", "",
                  _table([[v, str(s)] for v, s in steps.iter_rows()], ["model_version", "steps"]), ""]
    runs_path = out_dir / RUNS_FILE
    if runs_path.exists():
        runs = json.loads(runs_path.read_text())
        rows = [[str(r["level"]), str(r["k"]), r["split_mode"], "default" if r["full"] else "comparison",
                 str(r.get("lora_steps", "-")), str(r.get("histories", "-")), f"{r['seconds'] / 60:.1f}",
                 str(r["returncode"])] for r in runs]
        total = sum(r["seconds"] for r in runs) / 60
        lines += ["## Runs of `make evaluate`", "",
                  f"{len(runs)} runs, {total:.1f} min in all. Comparison runs fine-tune with fewer LoRA steps and "
                  "without the zero-shot policy; `evaluated` lookups cover only the eval split's and the validation "
                  "fold's histories, so their balance rows describe those histories.", "",
                  _table(rows, ["level", "K", "split", "run", "LoRA steps", "lookup histories", "minutes", "rc"]), ""]
    report.path.write_text("\n".join(lines))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default reports/<warehouse stem>)")
    args = parser.parse_args(argv)
    with wh.connect(read_only=True) as con:
        report = build_report(con, args.out)
    print(f"report: {report.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
