"""Text alignment: business descriptions placed in the same Lorentz space as the codes.

Supervision is the Census index file: each kept index entry (and each 6-digit title) is a positive for
its 6-digit code. A query head maps a sentence embedding to a direction, placed at the radius of the
6-digit codes, so a text's nearest code point is its classification. Two terms train it:
- cross-entropy over every 6-digit code, logits -d(q, code) / temperature;
- InfoNCE against K negatives drawn by the curriculum's buckets with the triplets' hardness logic, the
  text standing at its code: a sibling (hardness 5) is harder than a cousin (3), a code in another
  sector is hardness 1, and a code the true code excludes is hardness 8, the hardest.
The text side is either the frozen encoder's features with a trained head (CPU), or the encoder
itself fine-tuned with the head (GPU). Held-out entries (naics_index_holdout) never enter training, nor
do the validation entries of data.entry_splits (the classifier's fusion is fitted on them).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from naics_pipeline.data.descriptions import exclusion_pairs
from naics_pipeline.data.distances import distance_matrix, tree_arrays
from naics_pipeline.training import lorentz
from naics_pipeline.training.losses import text_losses
from naics_pipeline.training.model import QueryHead
from naics_pipeline.training.module import NaicsContrastive

LEAF_LEVEL = 6


@dataclass
class TextExamples:
    """Training texts with their 6-digit code, as an index into the descriptions' rows."""
    texts: list[str]
    code_index: np.ndarray     # (T,) row of naics_descriptions

    @classmethod
    def from_descriptions(cls, descriptions: pa.Table, with_titles: bool = True,
                          withhold_validation: bool = True) -> TextExamples:
        """Every kept index entry ('; '-joined in `examples`) and, optionally, each 6-digit title;
        without the validation entries of data.entry_splits unless `withhold_validation` is False (the
        classifier's fusion is fitted on them, so the text side must not train on them)."""
        from naics_pipeline.data.entry_splits import kept_entries, validation_entries

        withheld = validation_entries(descriptions) if withhold_validation else set()
        own: dict[str, list[str]] = {}
        for entry, code in zip(*kept_entries(descriptions)):
            if (code, entry) not in withheld:
                own.setdefault(code, []).append(entry)
        texts, rows = [], []
        for i, (code, level, title) in enumerate(zip(*(descriptions.column(c).to_pylist()
                                                       for c in ("code", "level", "title")))):
            if level != LEAF_LEVEL:
                continue
            entries = own.get(code, [])
            texts += entries
            rows += [i] * len(entries)
            if with_titles:
                texts.append(title)
                rows.append(i)
        return cls(texts, np.array(rows, np.int64))

    def subset(self, keep: np.ndarray) -> TextExamples:
        return TextExamples([t for t, k in zip(self.texts, keep) if k], self.code_index[keep])


@dataclass
class TextConfig:
    """The text side of a text-alignment stage."""
    encoder: str = "frozen"            # frozen: the encoder's features + a trained head; finetune: the encoder too
    hidden_dim: int = 1024
    temperature: float = 0.05
    weight: float = 1.0                # text terms vs the hierarchy InfoNCE that keeps the codes' geometry
    hard_weight: float = 0.5           # InfoNCE against the hardness-drawn negatives, vs the all-leaf term
    encoder_learning_rate: float = 3e-5
    max_tokens: int = 32
    # True: the codes also move towards their texts (measured on an H200: 6-digit top-1 0.781 against
    # 0.713 with them fixed, NDCG@10 0.949 against 0.962); False: the text terms see the codes detached.
    move_codes: bool = True


@dataclass
class TextTask:
    """A text-alignment stage's config, the texts it trains on and the texts it is scored on (never
    trained on) with their codes."""
    config: TextConfig
    examples: TextExamples
    test_texts: list[str]
    test_codes: list[str]
    test_features: np.ndarray | None = None   # the frozen encoder's vectors of test_texts, when known

    @classmethod
    def of_index(cls, config: TextConfig, descriptions: pa.Table, embeddings, holdout_texts: list[str]) -> TextTask:
        """The pipeline's: trained on the kept index entries and 6-digit titles, scored on the held-out
        entries (naics_index_holdout, whose vectors text_embeddings holds)."""
        return cls(config, TextExamples.from_descriptions(descriptions), list(holdout_texts),
                   embeddings.holdout_codes, embeddings.holdout)


def leaf_hardness(descriptions: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(leaf row indexes, (L, L) hardness of leaf n as a negative for a text of leaf y).

    The triplets' rule with the positive at distance 0 (the text stands at its code): another sector
    is 1, else by the tree distance d(y, n) as distance_diff (<=2 -> 5, <=3 -> 4, <=4 -> 3, else 2;
    leaves are never 0.5 or 1 apart), and 8 when y excludes n. The diagonal is 0 (never a negative)."""
    levels = descriptions.column("level").to_numpy()
    leaves = np.nonzero(levels == LEAF_LEVEL)[0]
    t = tree_arrays(descriptions)
    dist = distance_matrix(t)[np.ix_(leaves, leaves)]
    sector = t.sector[leaves]
    hard = np.select([dist <= 2, dist <= 3, dist <= 4], [5, 4, 3], 2).astype(np.int8)
    hard[sector[:, None] != sector[None, :]] = 1
    pos = {int(r): j for j, r in enumerate(leaves)}
    links = exclusion_pairs(descriptions)
    for a, b in zip(links.column("code").to_numpy(), links.column("excluded").to_numpy()):
        if int(a) in pos and int(b) in pos:
            hard[pos[int(a)], pos[int(b)]] = 8
    np.fill_diagonal(hard, 0)
    return leaves, hard


class LeafNegatives:
    """Draws K negatives per text from its code's leaves, split over the curriculum's buckets with the
    guide's fallback to easier levels when a bucket runs short (for a leaf: no sibling, no exclusion)."""

    def __init__(self, hardness: np.ndarray, allocation: dict[int, int], device: torch.device):
        n = len(hardness)
        self.k = sum(allocation.values())
        # Candidates of each leaf sorted by hardness, hardest first: bucket h is one contiguous range.
        order = np.argsort(-hardness, axis=1, kind="stable")
        counts = np.stack([(hardness == h).sum(1) for h in range(9)], 1)                   # (L, 9)
        start = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1] - counts                       # hardness > h first
        take = np.zeros((n, 9), np.int64)
        carry = np.zeros(n, np.int64)
        for h in range(8, 0, -1):
            want = allocation.get(h, 0) + carry
            take[:, h] = want if h == 1 else np.minimum(want, counts[:, h])
            carry = want - take[:, h]
        buckets = np.arange(8, 0, -1)
        slot_bucket = np.stack([np.repeat(buckets, take[y, 8:0:-1]) for y in range(n)])        # (L, K)
        slot_rank = np.stack([np.concatenate([np.arange(t) for t in take[y, 8:0:-1]]) for y in range(n)])
        as_t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
        self.order = as_t(order)
        self.slot_bucket, self.slot_rank = as_t(slot_bucket), as_t(slot_rank)
        self.slot_start = as_t(np.take_along_axis(start, slot_bucket, 1))
        self.slot_count = as_t(np.take_along_axis(counts, slot_bucket, 1))
        self.slot_take = as_t(np.take_along_axis(take, slot_bucket, 1))
        self.realized = {h: float(take[:, h].sum() / take.sum()) for h in range(1, 9) if take[:, h].any()}

    def draw(self, leaf: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K) negative leaves (positions among the leaves) and their hardness, for (B,) true leaves.
        Stratified: slot j of a bucket's t slots draws from the j-th of t equal slices, so the
        negatives of one text are distinct."""
        count, take = self.slot_count[leaf].double(), self.slot_take[leaf].double()
        rank = self.slot_rank[leaf].double()
        lo, hi = torch.floor(rank * count / take), torch.floor((rank + 1) * count / take)   # integer slices
        u = torch.rand(count.shape, generator=generator, device=count.device, dtype=torch.float64)
        offset = (lo + torch.floor(u * (hi - lo))).long()
        return torch.gather(self.order[leaf], 1, self.slot_start[leaf] + offset), self.slot_bucket[leaf]


class TextSide(nn.Module):
    """Texts -> sentence embeddings: precomputed frozen features, or the encoder being fine-tuned."""

    def __init__(self, features: np.ndarray | None = None, encoder: nn.Module | None = None,
                 tokens: dict[str, np.ndarray] | None = None):
        super().__init__()
        self.encoder = encoder
        if encoder is None:
            self.register_buffer("features", torch.as_tensor(features, dtype=torch.float32), persistent=False)
        else:
            self.register_buffer("input_ids", torch.as_tensor(tokens["input_ids"]), persistent=False)
            self.register_buffer("attention_mask", torch.as_tensor(tokens["attention_mask"]), persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            return self.features[idx]
        mask = self.attention_mask[idx]
        width = int(mask.shape[1])  # fixed width: no data-dependent trimming (no sync, one graph shape)
        out = self.encoder({"input_ids": self.input_ids[idx][:, :width], "attention_mask": mask})
        return out["sentence_embedding"].float()


class TextAlignmentModule(NaicsContrastive):
    """The hierarchy InfoNCE of the stage's curriculum (it keeps the codes' geometry) plus the text terms."""

    not_hyperparameters = (*NaicsContrastive.not_hyperparameters, "text_side", "leaves", "text_leaf", "leaf_hardness")

    def __init__(self, *, text_cfg: dict, text_side: TextSide, leaves: np.ndarray, text_leaf: np.ndarray,
                 leaf_hardness: np.ndarray, allocation: dict[int, int], **hierarchy):
        super().__init__(**hierarchy)
        self.text_cfg = TextConfig(**text_cfg)
        self.text_side = text_side
        self.head = QueryHead(self.cfg.text_dim, self.text_cfg.hidden_dim, self.cfg.embedding_dim)
        self.register_buffer("leaves", torch.as_tensor(leaves), persistent=False)
        self.register_buffer("text_leaf", torch.as_tensor(text_leaf), persistent=False)
        self._hardness, self._allocation, self.negatives = leaf_hardness, allocation, None

    def leaf_radius(self) -> torch.Tensor:
        return self.model.level_radius(torch.tensor([LEAF_LEVEL], device=self.device))

    def queries(self, features: torch.Tensor) -> torch.Tensor:
        radius = self.leaf_radius() if self.text_cfg.move_codes else self.leaf_radius().detach()
        return self.head(features, radius, c=self.cfg.curvature)

    def on_fit_start(self):
        self.negatives = LeafNegatives(self._hardness, self._allocation, self.device)

    def _step(self, batch, stage: str):
        points, lb, _ = self.all_points()
        loss = self.hierarchy_loss(points, lb, batch, stage)
        if "text" not in batch:   # validation: the hierarchy term; the text side is scored on held-out entries
            return loss
        idx = batch["text"]
        target = self.text_leaf[idx]
        negatives, _ = self.negatives.draw(target, batch["text_generator"])
        leaves = points[self.leaves] if self.text_cfg.move_codes else points[self.leaves].detach()
        sentences = self.text_side(idx)
        ce, hard = text_losses(self.queries(sentences), leaves, target, negatives,
                               c=self.cfg.curvature, temperature=self.text_cfg.temperature)
        self.accumulate(f"{stage}_text_loss", ce)
        self.accumulate(f"{stage}_text_hard_loss", hard)
        text = (1 - self.text_cfg.hard_weight) * ce + self.text_cfg.hard_weight * hard
        return loss + self.text_cfg.weight * text

    def parameter_groups(self) -> list[dict]:
        encoder = list(self.text_side.parameters())
        ids = {id(p) for p in encoder}
        rest = [p for p in self.parameters() if id(p) not in ids]
        groups = [{"params": rest}]
        if encoder:
            groups.append({"params": encoder, "lr": self.text_cfg.encoder_learning_rate})
        return groups

    def text_state(self) -> dict:
        """What model.pt needs to classify text: the head, its config and a fine-tuned encoder (fp16)."""
        state = {"text_config": asdict(self.text_cfg), "text_head": self.head.state_dict()}
        if self.text_side.encoder is not None:
            state["text_encoder"] = {k: v.half() for k, v in self.text_side.encoder.state_dict().items()}
        return state


def fit_query_head(features: np.ndarray, leaf: np.ndarray, leaf_points: np.ndarray, radius: float, c: float,
                   cfg: TextConfig | None = None, epochs: int = 12, batch_size: int = 256, lr: float = 1e-3,
                   seed: int = 0) -> QueryHead:
    """A query head trained alone on frozen text features (T, D) and their leaf positions (T,) against
    fixed leaf points (L, d+1): the all-leaf cross-entropy of the text stage, codes not moving. Used to
    refit the text side on a cross-validation fold in seconds (text.crossfit)."""
    return _fit_text_side(TextSide(features=features), features.shape[1], leaf, leaf_points, radius, c,
                          cfg or TextConfig(), epochs, batch_size, lr, seed, "cpu")


def fine_tune_query_head(texts: list[str], leaf: np.ndarray, leaf_points: np.ndarray, radius: float, c: float,
                         encoder, cfg: TextConfig | None = None, epochs: int = 40, batch_size: int = 512,
                         lr: float = 1e-3, seed: int = 0) -> QueryHead:
    """fit_query_head with the encoder (a MiniLMEncoder, changed in place) fine-tuned too, as the GPU text
    stage does, at cfg.encoder_learning_rate. Codes fixed.
    The GPU path of a cross-validation fold's refit (text.crossfit)."""
    cfg = cfg or TextConfig(encoder="finetune")
    st = encoder.trainable()
    st.max_seq_length = cfg.max_tokens
    tokens = {k: v.numpy() for k, v in st.tokenize(list(texts)).items() if k in ("input_ids", "attention_mask")}
    device = str(next(st.parameters()).device)
    head = _fit_text_side(TextSide(encoder=st, tokens=tokens).to(device), encoder.dim, leaf, leaf_points, radius, c,
                          cfg, epochs, batch_size, lr, seed, device)
    st.eval()
    if device.startswith("cuda"):
        st.half()     # inference in fp16, as TextClassifier.load runs a fine-tuned stage on a GPU
    return head.cpu()


def _fit_text_side(side: TextSide, dim: int, leaf: np.ndarray, leaf_points: np.ndarray, radius: float, c: float,
                   cfg: TextConfig, epochs: int, batch_size: int, lr: float, seed: int, device: str) -> QueryHead:
    torch.manual_seed(seed)
    head = QueryHead(dim, cfg.hidden_dim, leaf_points.shape[1] - 1).to(device)
    groups = [{"params": head.parameters()}]
    if side.encoder is not None:
        groups.append({"params": side.encoder.parameters(), "lr": cfg.encoder_learning_rate})
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=1e-4)
    y = torch.as_tensor(leaf, dtype=torch.long, device=device)
    points = torch.as_tensor(leaf_points, dtype=torch.float64, device=device)
    r = torch.tensor([radius], dtype=torch.float64, device=device)
    gen = torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(batch_size):
            idx = idx.to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
                sentences = side(idx).float()
            logits = -lorentz.pairwise_distance(head(sentences, r, c=c), points, c=c) / cfg.temperature
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    head.eval()
    return head
