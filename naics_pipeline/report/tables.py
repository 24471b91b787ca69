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


def _went_to(flows: dict) -> str:
    """Where a bucket's missing negatives went: the three largest shares (of 1% or more)."""
    total = sum(flows.values())
    if not total:
        return "-"
    shares = [(share, h) for share, h in sorted(((n / total, h) for h, n in flows.items()), reverse=True)
              if share >= 0.01]
    return ", ".join(f"{h}: {100 * share:.0f}%" for share, h in shares[:3]) + (", …" if len(shares) > 3 else "")


def mix_markdown(meta: dict) -> str:
    """A sampling index's requested vs realized mix (meta.json) and its shortfalls, narrow enough for the
    asset page's metadata column."""
    requested, realized = meta["requested_mix"], meta["realized_mix"]
    shortfalls, candidates, allocation = meta["shortfalls"], meta["candidates"], meta["allocation"]
    short_is = "pairs short / negatives short" if meta["mix"] == "per_pair" else "negatives short"
    lines = [f"Mix **{meta['mix']}**. K/pair: the per-pair split of K before fallback. Short: {short_is} per "
             "epoch. Went to: the levels that took those negatives.", "",
             "| H | Candidates | Requested | Realized | K/pair | Short | Went to |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for h in (str(h) for h in HARDNESS):
        if h in requested or h in realized:
            short = shortfalls.get(h, {})
            lost = f"{short['negatives_short']:,}" if short else "-"
            if "pairs_short" in short:
                lost = f"{short['pairs_short']:,} / {lost}"
            lines.append(f"| {h} | {candidates[h]:,} | {100 * requested.get(h, 0):.1f}% | "
                         f"{100 * realized.get(h, 0):.1f}% | {allocation.get(h, 0)} | {lost} | "
                         f"{_went_to(short.get('went_to', {}))} |")
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
