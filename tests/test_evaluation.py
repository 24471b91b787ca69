"""Published hierarchy metrics (Nickel & Kiela reconstruction, Sala neighbour MAP) and the text accuracy
helpers, on a small tree with hand-computed answers."""
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pytest

from naics_pipeline.data.distances import distance_matrix, lca_depth_matrix, tree_arrays
from naics_pipeline.training.evaluation import (
    ancestor_mask,
    hierarchy_metrics,
    neighbour_mask,
    novel_entries,
    ranking_metrics,
    text_accuracy,
    tree_calibration,
)

#   11 ── 111 ── 1111 ── 11111        21 ── 211
#     │            └──── 11112
#     └── 112
CODES = ["11", "111", "1111", "11111", "11112", "112", "21", "211"]
PARENTS = [None, "11", "111", "1111", "1111", "11", None, "21"]
POS = {c: i for i, c in enumerate(CODES)}


def small_tree() -> pa.Table:
    return pa.table({"code": CODES, "parent": PARENTS, "level": [len(c) for c in CODES]})


def approx(fraction: Fraction):
    return pytest.approx(float(fraction), abs=1e-12)


def test_masks_hold_the_ancestor_closure_and_the_tree_edges():
    t = tree_arrays(small_tree())
    anc = {(CODES[u], CODES[v]) for u, v in zip(*np.nonzero(ancestor_mask(t)))}
    assert anc == {("111", "11"), ("1111", "111"), ("1111", "11"), ("11111", "1111"), ("11111", "111"),
                   ("11111", "11"), ("11112", "1111"), ("11112", "111"), ("11112", "11"), ("112", "11"),
                   ("211", "21")}
    nb = neighbour_mask(t)
    assert (nb == nb.T).all() and nb.sum() == 2 * 6   # 6 tree edges, no virtual root
    assert {CODES[v] for v in np.nonzero(nb[POS["1111"]])[0]} == {"111", "11111", "11112"}


def test_tree_distance_calibration_by_hand():
    """Tree distances here: a code's parent and children are 0.5 away (ties), siblings 2.
    Ties for the ancestor: 1111's grandparent 11 (1.5) loses to its two children (0.5): rank 3, precision 2/4;
    11111's 11 (2.5) loses to its sibling (2): rank 2, precision 3/4; every other pair has rank 1."""
    t = tree_arrays(small_tree())
    cal = tree_calibration(distance_matrix(t).astype(np.float64), t)
    assert cal["tree_reconstruction_mean_rank"] == approx(Fraction(15, 11))
    # AP per code with ancestors: 111 1, 1111 (1 + 1/2)/2, 11111 and 11112 (1 + 1 + 3/4)/3, 112 1, 211 1
    assert cal["tree_reconstruction_map"] == approx((1 + Fraction(3, 4) + 2 * Fraction(11, 12) + 2) / 6)
    # Ties against: 111's parent ties with its child 1111 (rank 2, precision 1/2); 1111's parent ties
    # with both children (rank 3, precision 1/3).
    assert cal["tree_reconstruction_mean_rank_ties_against"] == approx(Fraction(18, 11))
    assert cal["tree_reconstruction_map_ties_against"] == approx(Fraction(19, 24))
    assert cal["tree_neighbour_map"] == 1.0 and cal["tree_neighbour_map_ties_against"] == 1.0


def perfect_reconstruction(t) -> np.ndarray:
    """Ancestors 0.1 per level up; every other code 10 + its tree distance (never closer)."""
    d = 10 + distance_matrix(t).astype(np.float64)
    u, v = np.nonzero(ancestor_mask(t))
    d[u, v] = 0.1 * (t.depth[u] - t.depth[v])
    np.fill_diagonal(d, 0)
    return d


def test_perfect_and_swapped_reconstruction():
    t = tree_arrays(small_tree())
    d = perfect_reconstruction(t)
    assert ranking_metrics(d, ancestor_mask(t)) == (1.0, 1.0)
    # Swap: the siblings 11111 and 11112 now sit between their grandparent (0.2) and sector (0.3).
    a, b = POS["11111"], POS["11112"]
    d[a, b] = d[b, a] = 0.25
    mean_rank, recon_map = ranking_metrics(d, ancestor_mask(t))
    assert mean_rank == approx(Fraction(13, 11))          # the sector ranks 2nd for both
    assert recon_map == approx((4 + 2 * Fraction(11, 12)) / 6)


def test_neighbour_map_perfect_on_path_length_and_broken_by_a_swap():
    """The plain path length puts exactly the parent and children at 1: neighbour MAP 1. Swapping
    the points of 11111 and 211 costs the rows that see either of them."""
    t = tree_arrays(small_tree())
    depth = t.depth.astype(np.float64)
    path = depth[:, None] + depth[None, :] - 2 * lca_depth_matrix(t)
    assert hierarchy_metrics(path, t)["neighbour_map"] == 1.0
    perm = np.arange(len(CODES))
    perm[[POS["11111"], POS["211"]]] = perm[[POS["211"], POS["11111"]]]
    swapped = path[np.ix_(perm, perm)]
    by_hand = neighbour_ap_by_brute_force(swapped, neighbour_mask(t))
    got = hierarchy_metrics(swapped, t)["neighbour_map"]
    assert got == pytest.approx(by_hand) and got < 0.9


def neighbour_ap_by_brute_force(d: np.ndarray, relevant: np.ndarray) -> float:
    """Sala et al.'s definition, one code and one neighbour at a time: precision in the smallest ball
    around the code that holds the neighbour."""
    aps = []
    for u in range(len(d)):
        others = [w for w in range(len(d)) if w != u]
        nbrs = [v for v in others if relevant[u, v]]
        if not nbrs:
            continue
        precisions = []
        for v in nbrs:
            ball = [w for w in others if d[u, w] <= d[u, v]]
            precisions.append(sum(relevant[u, w] for w in ball) / len(ball))
        aps.append(np.mean(precisions))
    return float(np.mean(aps))


def test_ranking_metrics_match_scikit_learn_average_precision():
    from sklearn.metrics import average_precision_score

    from tests.census_fixtures import synthetic_codes

    codes = [c for c, _ in synthetic_codes(("11", "21"), fanout=2)]
    parents = [None if len(c) == 2 else c[:-1] for c in codes]
    t = tree_arrays(pa.table({"code": codes, "parent": parents}))
    rng = np.random.default_rng(3)
    d = rng.random((len(codes), len(codes)))
    d = np.round(d + d.T, 1)                      # rounding makes ties: sklearn counts them against
    for mask in (ancestor_mask(t), neighbour_mask(t)):
        rows = [u for u in range(len(codes)) if mask[u].any()]
        expected = np.mean([average_precision_score(np.delete(mask[u], u), -np.delete(d[u], u)) for u in rows])
        assert ranking_metrics(d, mask, "against")[1] == pytest.approx(expected)


def test_a_collapsed_embedding_scores_worst_with_ties_against():
    t = tree_arrays(small_tree())
    n = len(CODES)
    collapsed = np.zeros((n, n))
    nb = neighbour_mask(t)
    degree = nb.sum(1)
    rank, nmap = ranking_metrics(collapsed, nb, "against")
    assert nmap == pytest.approx(np.mean(degree / (n - 1)))
    assert rank == pytest.approx(np.sum(degree * (n - degree)) / degree.sum())
    assert ranking_metrics(collapsed, nb, "for") == (1.0, 1.0)   # why "for" is only for the calibration
    with pytest.raises(ValueError, match="ties"):
        ranking_metrics(collapsed, nb, "half")


def accuracy_descriptions() -> pa.Table:
    codes = ["11", "111", "1111", "111110", "111120", "1112", "111210", "21", "211", "2111", "211110"]
    return pa.table({"code": codes, "parent": [None, "11", "111", "1111", "1111", "111", "1112", None, "21",
                                               "211", "2111"],
                     "level": [len(c) for c in codes], "title": [f"Title {c}" for c in codes],
                     "description": [f"Makes {c} things, e.g. blue widgets" for c in codes]})


def test_text_accuracy_counts_hits_at_each_level():
    desc = accuracy_descriptions()
    ranked = [["111120", "211110", "", "", ""],     # truth 111110: same 4-digit group at rank 1
              ["211110", "111210", "", "", ""],     # truth 111210: exact at rank 2, sector 11 at rank 2
              ["", "", "", "", ""]]                 # truth 211110: nothing predicted
    acc = text_accuracy(ranked, ["111110", "111210", "211110"], desc)
    assert acc["holdout_entries"] == 3
    assert (acc["top1_6digit"], acc["top5_6digit"]) == (0.0, pytest.approx(1 / 3))
    assert (acc["top1_4digit"], acc["top5_4digit"]) == (pytest.approx(1 / 3), pytest.approx(2 / 3))
    assert (acc["top1_2digit"], acc["top5_2digit"]) == (pytest.approx(1 / 3), pytest.approx(2 / 3))


def test_novel_entries_drop_text_found_in_the_description_or_equal_to_the_title():
    desc = accuracy_descriptions()
    entries = ["Blue widgets", "title 111210", "red widgets", "Blue-widget"]
    codes = ["111110", "111210", "211110", "111110"]
    assert novel_entries(entries, codes, desc).tolist() == [False, False, True, True]
    acc = text_accuracy([["111110"] * 5, ["111110"] * 5, ["211110"] * 5, ["211110"] * 5], codes, desc, entries)
    assert acc["holdout_entries_novel"] == 2
    assert acc["top1_6digit_novel"] == 0.5 and acc["top1_2digit_novel"] == 0.5


@pytest.mark.integration
def test_tree_calibration_on_naics_2022(real_naics, tmp_path):
    """The tree distance's own values on the real 2,125 codes (notes/text.md explains them)."""
    from naics_pipeline.data.descriptions import build_descriptions
    from naics_pipeline.data.source import fetch_source

    desc = build_descriptions(fetch_source(str(real_naics), tmp_path)).descriptions
    t = tree_arrays(desc)
    cal = tree_calibration(distance_matrix(t).astype(np.float64), t)
    assert int(ancestor_mask(t).sum()) == 6827
    assert cal["tree_reconstruction_mean_rank"] == pytest.approx(2.2896, abs=1e-4)
    assert cal["tree_reconstruction_map"] == pytest.approx(0.7937, abs=1e-4)
    assert cal["tree_reconstruction_mean_rank_ties_against"] == pytest.approx(2.7321, abs=1e-4)
    assert cal["tree_reconstruction_map_ties_against"] == pytest.approx(0.6402, abs=1e-4)
    assert cal["tree_neighbour_map"] == 1.0
