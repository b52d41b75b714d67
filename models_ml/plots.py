"""Training curves as PNG files (matplotlib, Agg backend: no display needed). Shared
by the fine-tuning and ranking steps, which save them next to their models, and by
the evaluation report."""

from __future__ import annotations

from pathlib import Path

import polars as pl


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_finetune_curve(history: pl.DataFrame, path: Path, baselines: dict[str, float] | None = None,
                        title: str = "LoRA fine-tuning (eval sample; step 0 = zero-shot)") -> Path:
    """Loss and match rate / recall@1 / recall@5 over steps (step 0 = zero-shot), with a
    dashed line per ``baselines`` entry (label -> value)."""
    plt = _pyplot()
    history = history.sort("step")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    loss = history.filter(pl.col("loss").is_not_null())
    a1.plot(loss["step"], loss["loss"], marker="o")
    a1.set_xlabel("step")
    a1.set_ylabel("training loss (answer tokens)")
    a1.grid(alpha=0.3)
    for col, label in (("match_rate", "match rate"), ("recall_at_1", "recall@1"), ("recall_at_5", "recall@5")):
        a2.plot(history["step"], history[col], marker="o", label=label)
    styles = [("gray", "--"), ("black", "--"), ("tab:red", ":"), ("tab:purple", "-.")]
    for (name, value), (color, style) in zip((baselines or {}).items(), styles * 4):
        a2.axhline(value, linestyle=style, linewidth=1.2, color=color, label=name)
    a2.set_xlabel("step")
    a2.set_ylim(0, 1.02)
    a2.grid(alpha=0.3)
    a2.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_ranker_curve(history: list[dict], path: Path, metric: str, popularity: float | None = None,
                      best_epoch: int | None = None) -> Path:
    """The sequence recommender's training loss and validation ``metric`` per epoch, the
    kept epoch marked, and popularity's test value as a dashed line."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.plot(epochs, [r["loss"] for r in history], marker="o")
    a1.set_xlabel("epoch")
    a1.set_ylabel("training loss")
    a1.grid(alpha=0.3)
    key = f"valid_{metric}"
    if any(key in r for r in history):
        a2.plot(epochs, [r.get(key, float("nan")) for r in history], marker="o", label=f"validation {metric}")
    if popularity is not None:
        a2.axhline(popularity, linestyle="--", linewidth=1, color="gray", label=f"popularity {metric} (test)")
    if best_epoch is not None:
        for ax in (a1, a2):
            ax.axvline(best_epoch, linestyle=":", linewidth=1, color="black")
        a2.plot([], [], linestyle=":", color="black", label=f"kept epoch {best_epoch}")
    a2.set_xlabel("epoch")
    a2.grid(alpha=0.3)
    a2.legend(fontsize=8)
    fig.suptitle("SASRec training (leave-last-out)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
