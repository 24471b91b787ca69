"""Markdown tables for asset metadata and the README (the Dagster UI renders them)."""
from __future__ import annotations

HARDNESS = range(1, 9)

# The guide's reference table (its 263M-triplet dataset), shown next to our measured counts.
GUIDE_TABLE = {
    1: ("Unrelated", "246.3M", "93.36%"), 2: ("Distant", "379K", "0.14%"),
    3: ("Moderate", "395K", "0.15%"), 4: ("Related", "827K", "0.31%"),
    5: ("Close", "3.6M", "1.37%"), 6: ("Siblings", "12.2M", "4.61%"),
    7: ("Very Hard", "4K", "0.00%"), 8: ("Exclusions", "125K", "0.05%"),
}


def hardness_markdown(counts: dict[int, int]) -> str:
    total = sum(counts.values()) or 1
    lines = ["| Hardness | Type | Rows (measured) | % (measured) | Guide count | Guide % |",
             "|---|---|---:|---:|---:|---:|"]
    for h in range(1, 9):
        name, g_count, g_pct = GUIDE_TABLE[h]
        n = counts.get(h, 0)
        lines.append(f"| {h} | {name} | {n:,} | {100 * n / total:.2f}% | {g_count} | {g_pct} |")
    lines.append(f"| **all** | | **{total:,}** | 100% | 263M+ | 100% |")
    return "\n".join(lines)


def mix_markdown(sim: dict, candidates: dict[int, int]) -> str:
    lines = ["| Hardness | Candidates | Requested | Realized | Pairs short | Negatives moved away |",
             "|---|---:|---:|---:|---:|---:|"]
    for h in HARDNESS:
        if sim["requested"][h] or sim["realized"][h]:
            lines.append(f"| {h} | {candidates[h]:,} | {100 * sim['requested'][h]:.2f}% | "
                         f"{100 * sim['realized'][h]:.2f}% | {sim['fallback_pairs'][h]:,} | {sim['shortfall'][h]:,} |")
    return "\n".join(lines)


METRIC_LABELS = [("spearman", "Spearman"), ("pearson", "Pearson"), ("ndcg_at_10", "NDCG@10"),
                 ("mean_distortion", "mean distortion"), ("parent_retrieval_accuracy", "parent retrieval"),
                 ("exclusion_separation", "exclusion separation"),
                 ("reconstruction_mean_rank", "reconstruction mean rank (Nickel & Kiela)"),
                 ("reconstruction_map", "reconstruction MAP (Nickel & Kiela)"),
                 ("neighbour_map", "neighbour MAP (Sala et al.)"),
                 ("tree_reconstruction_mean_rank", "tree distance: reconstruction mean rank"),
                 ("tree_reconstruction_map", "tree distance: reconstruction MAP"),
                 ("tree_neighbour_map", "tree distance: neighbour MAP"),
                 ("load_balancing_loss", "load-balancing loss"),
                 ("final_train_loss", "final train loss"), ("final_val_loss", "final val loss")]


def _cell(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("n/a" if v is None else str(v))


def metrics_markdown(metrics: dict) -> str:
    """One stage's metrics, plus the held-out retrieval numbers. The tree-distance rows are the
    calibration: the tree's own values, its ties counted for the relevant code."""
    rows = ["| metric | value |", "|---|---:|"]
    rows += [f"| {label} | {_cell(metrics.get(key))} |" for key, label in METRIC_LABELS]
    rows += [f"| holdout {key} | {_cell(v)} |" for key, v in (metrics.get("retrieval") or {}).items()]
    return "\n".join(rows)


def stages_markdown(per_stage: dict[str, dict]) -> str:
    """Every stage's metrics side by side (stage name -> metrics)."""
    lines = ["| metric | " + " | ".join(per_stage) + " |", "|---|" + "---:|" * len(per_stage)]
    for key, label in METRIC_LABELS + [("seconds", "seconds")]:
        lines.append(f"| {label} | " + " | ".join(_cell(m.get(key)) for m in per_stage.values()) + " |")
    return "\n".join(lines)
