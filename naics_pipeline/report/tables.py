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


def _went_to(flows: dict) -> str:
    return ", ".join(f"{n:,} to {h}" for h, n in flows.items()) or "-"


def mix_markdown(meta: dict) -> str:
    """A sampling index's requested vs realized mix (meta.json), its shortfalls and, in global mode,
    how far the positives moved."""
    requested, realized = meta["requested_mix"], meta["realized_mix"]
    shortfalls, candidates, allocation = meta["shortfalls"], meta["candidates"], meta["allocation"]
    lines = [f"Mix: **{meta['mix']}** (of K per pair: the per-pair split of K before fallback).", "",
             "| Hardness | Candidates | Requested | Realized | Of K per pair | Pairs short | Negatives short "
             "| Went to |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for h in (str(h) for h in HARDNESS):
        if h in requested or h in realized:
            short = shortfalls.get(h, {})
            pairs_short = f"{short['pairs_short']:,}" if "pairs_short" in short else "-"
            lines.append(f"| {h} | {candidates[h]:,} | {100 * requested.get(h, 0):.2f}% | "
                         f"{100 * realized.get(h, 0):.2f}% | {allocation.get(h, 0)} | {pairs_short} | "
                         f"{short.get('negatives_short', 0):,} | {_went_to(short.get('went_to', {}))} |")
    shift = meta.get("positive_shift")
    if shift:
        per_pair, drawn = shift["positive_distance"]["per_pair"], shift["positive_distance"]["global"]
        lines += ["", f"Pairs drawn at least once in the epoch: {100 * shift['pairs_drawn_share']:.1f}% "
                      f"(most draws of one pair: {shift['max_draws_per_pair']}).", "",
                  "| Positive distance | Share of pairs | Share of draws |", "|---:|---:|---:|"]
        lines += [f"| {d} | {100 * per_pair[d]:.2f}% | {100 * drawn[d]:.2f}% |" for d in per_pair]
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
