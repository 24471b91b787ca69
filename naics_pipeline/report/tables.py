"""Markdown tables for asset metadata and the README (the Dagster UI renders them)."""
from __future__ import annotations

from naics_pipeline.report.numbers import cell

HARDNESS = range(1, 9)

# The guide's reference table (its 263M-triplet dataset), shown next to our measured counts.
GUIDE_TABLE = {
    1: ("Unrelated", "246.3M", "93.36%"), 2: ("Distant", "379K", "0.14%"),
    3: ("Moderate", "395K", "0.15%"), 4: ("Related", "827K", "0.31%"),
    5: ("Close", "3.6M", "1.37%"), 6: ("Siblings", "12.2M", "4.61%"),
    7: ("Very Hard", "4K", "0.00%"), 8: ("Exclusions", "125K", "0.05%"),
}


GUIDE_NOTE = ("*Guide count* and *Guide %* are the curriculum guide's table for its own 263M-triplet set, shown "
              "for comparison. *Rows (measured)* are every triplet the hardness rule admits on this vintage's "
              "tree (each same-sector positive with every qualifying negative), hence the larger counts: "
              "compare the shares.")


def hardness_markdown(counts: dict[int, int]) -> str:
    total = sum(counts.values()) or 1
    lines = ["| Hardness | Type | Rows (measured) | % (measured) | Guide count | Guide % |",
             "|---|---|---:|---:|---:|---:|"]
    for h in range(1, 9):
        name, g_count, g_pct = GUIDE_TABLE[h]
        n = counts.get(h, 0)
        lines.append(f"| {h} | {name} | {n:,} | {100 * n / total:.2f}% | {g_count} | {g_pct} |")
    lines.append(f"| **all** | | **{total:,}** | 100% | 263M+ | 100% |")
    return "\n".join(lines + ["", GUIDE_NOTE])


def _mostly_to(flows: dict) -> str:
    """The level that took most of a bucket's missing negatives, with its share."""
    total = sum(flows.values())
    if not total:
        return "-"
    level = max(flows, key=flows.get)
    return f"{level} ({100 * flows[level] / total:.0f}%)"


def mix_markdown(meta: dict) -> str:
    """A sampling index's requested vs realized mix (meta.json), then its shortfalls: two tables narrow
    enough for the asset page's metadata column."""
    requested, realized = meta["requested_mix"], meta["realized_mix"]
    shortfalls, candidates, allocation = meta["shortfalls"], meta["candidates"], meta["allocation"]
    lines = [f"Mix **{meta['mix']}** over one simulated epoch; K/pair: the per-pair split of K before fallback.",
             "", "| Hardness | Candidates | Requested | Realized | K/pair |", "|---|---:|---:|---:|---:|"]
    for h in (str(h) for h in HARDNESS):
        if h in requested or h in realized:
            lines.append(f"| {h} | {candidates[h]:,} | {100 * requested.get(h, 0):.1f}% | "
                         f"{100 * realized.get(h, 0):.1f}% | {allocation.get(h, 0)} |")
    if not shortfalls:
        return "\n".join(lines + ["", "No bucket fell short."])
    per_pair = meta["mix"] == "per_pair"
    lines += ["", "Short per epoch, and the level that took most of the missing negatives:", "",
              "| Hardness | " + ("Pairs short | " if per_pair else "") + "Negatives short | Mostly to |",
              "|---|" + ("---:|" if per_pair else "") + "---:|---|"]
    for h, short in shortfalls.items():
        pairs = f"{short['pairs_short']:,} | " if per_pair else ""
        lines.append(f"| {h} | {pairs}{short['negatives_short']:,} | {_mostly_to(short.get('went_to', {}))} |")
    return "\n".join(lines)


def positive_shift_markdown(shift: dict) -> str:
    """Global mode: how far the positives moved once pairs are drawn by weight."""
    per_pair, drawn = shift["positive_distance"]["per_pair"], shift["positive_distance"]["global"]
    lines = [f"Pairs drawn at least once in the epoch: {100 * shift['pairs_drawn_share']:.1f}% "
             f"(most draws of one pair: {shift['max_draws_per_pair']:,}).", "",
             "| Positive distance | Share of pairs | Share of draws |", "|---:|---:|---:|"]
    lines += [f"| {d} | {100 * per_pair[d]:.2f}% | {100 * drawn[d]:.2f}% |" for d in per_pair]
    return "\n".join(lines)


def negatives_short(meta: dict) -> int:
    """Negatives per epoch that fell back from their requested bucket, over every bucket."""
    return sum(s["negatives_short"] for s in meta["shortfalls"].values())


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


# The metrics a stage reports as numeric metadata entries (the Plots tab charts them across runs).
HEADLINE_METRICS = ("spearman", "pearson", "ndcg_at_10", "mean_distortion", "parent_retrieval_accuracy",
                    "exclusion_separation", "exclusion_separation_held_out", "load_balancing_loss",
                    "final_train_loss", "final_val_loss")
# Held-out index entries: through the code tower ("retrieval") and, in a text stage, the text query head.
RETRIEVAL = (("retrieval", "holdout"), ("text_retrieval", "text query"))
RETRIEVAL_LEVELS = ("6digit", "4digit", "2digit")


def retrieval_entries(metrics: dict) -> dict:
    """Top-1 and top-5 at 6 digits for each held-out retrieval the stage measured, as flat numbers."""
    out = {}
    for key, _ in RETRIEVAL:
        for k in ("top1_6digit", "top5_6digit"):
            if (metrics.get(key) or {}).get(k) is not None:
                out[f"{key.removesuffix('retrieval')}holdout_{k}"] = metrics[key][k]
    return out


def retrieval_markdown(metrics: dict) -> str:
    """Held-out entries -> their code: top-1/top-5 per level, all entries and the novel ones."""
    lines = ["| Held-out entries | top-1 | top-5 | top-1 novel | top-5 novel |", "|---|---:|---:|---:|---:|"]
    for key, label in RETRIEVAL:
        r = metrics.get(key) or {}
        for level in RETRIEVAL_LEVELS if r else ():
            lines.append(f"| {label}, {level[0]}-digit | " + " | ".join(
                cell(r.get(f"top{k}_{level}{novel}")) for novel in ("", "_novel") for k in (1, 5)) + " |")
    n = (metrics.get("retrieval") or {}).get("holdout_entries")
    return "\n".join(lines + (["", f"{n:,} held-out entries, none trained on."] if n is not None else []))


CALIBRATION = [("reconstruction_mean_rank", "reconstruction mean rank (Nickel & Kiela)"),
               ("reconstruction_map", "reconstruction MAP (Nickel & Kiela)"),
               ("neighbour_map", "neighbour MAP (Sala et al.)")]


def calibration_markdown(metrics: dict) -> str:
    """The model's ranking metrics beside the tree distance's own (its ties counted for, then against, the
    relevant code): how close the embedding comes to the tree it learns."""
    lines = ["| | model | tree | tree, ties against |", "|---|---:|---:|---:|"]
    lines += [f"| {label} | {cell(metrics.get(key))} | {cell(metrics.get(f'tree_{key}'))} | "
              f"{cell(metrics.get(f'tree_{key}_ties_against'))} |" for key, label in CALIBRATION]
    return "\n".join(lines)


SUMMARY = [("spearman", "Spearman"), ("ndcg_at_10", "NDCG@10"), ("parent_retrieval_accuracy", "parent retrieval"),
           ("exclusion_separation", "exclusion separation"), ("final_val_loss", "final val loss")]


def stages_summary_markdown(per_stage: dict[str, dict]) -> str:
    """The headline metrics of every stage side by side, with held-out top-1 at 6 digits: short enough for
    the UI to show inline (the full comparison is stages_markdown)."""
    lines = ["| | " + " | ".join(per_stage) + " |", "|---|" + "---:|" * len(per_stage)]
    rows = SUMMARY + [(f"{key}.top1_6digit", f"{label} top-1, 6-digit") for key, label in RETRIEVAL
                      if any(m.get(key) for m in per_stage.values())]
    for key, label in rows:
        group, _, name = key.partition(".")
        values = [(m.get(group) or {}).get(name) if name else m.get(key) for m in per_stage.values()]
        lines.append(f"| {label} | " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines)


def stages_markdown(per_stage: dict[str, dict]) -> str:
    """Every stage's metrics side by side (stage name -> metrics), the held-out retrieval included."""
    lines = ["| metric | " + " | ".join(per_stage) + " |", "|---|" + "---:|" * len(per_stage)]
    for key, label in METRIC_LABELS + [("seconds", "seconds")]:
        lines.append(f"| {label} | " + " | ".join(cell(m.get(key)) for m in per_stage.values()) + " |")
    for key, label in RETRIEVAL:
        if not any(m.get(key) for m in per_stage.values()):
            continue
        for level in RETRIEVAL_LEVELS:
            for k, novel in ((1, ""), (5, ""), (1, "_novel"), (5, "_novel")):
                name = f"top{k}_{level}{novel}"
                lines.append(f"| {label} {name.replace('_', ' ')} | " + " | ".join(
                    cell((m.get(key) or {}).get(name)) for m in per_stage.values()) + " |")
    return "\n".join(lines)
