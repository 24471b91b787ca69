"""The classifier refitted on a cross-validation fold, so that no test text of the fold reaches any
part that scores it.

Per fold, from the fold's training texts alone:
- a validation part is carved (data.entry_splits' rule over the fold's training texts);
- the text side: a query head trained on the frozen encoder's features of the training texts minus
  that validation part (training.text_alignment.fit_query_head), onto fixed code points;
- the code points: the last hierarchy stage's code model (trained on code texts, never on texts as
  queries) with the `examples` channel left empty, since that channel holds index entries of both folds;
- the entry index: the fold's training texts, the 6-digit titles, descriptions and cross-references
  (text.index.known_texts); the fusion weights
  fitted on the validation part (cross-fitted: each validation fold scored against the known texts
  without that fold) and the written descriptions' dev half (text.written), with the per-text
  temperature, then the index completed with it.
With `fine_tune` (the GPU, where the text stage fine-tunes MiniLM): the encoder is fine-tuned with the head
on the same texts (training.text_alignment.fine_tune_query_head), and every text of the fold is encoded by
it. Not refitted per fold: the code model's weights (stages 1-3). They were trained with the examples
channel filled, which is the only route by which a test text of the fold touched them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from naics_pipeline.layout import Layout


class FoldRefit:
    """`fit(train_texts, train_codes) -> predict(texts, k)` for baselines.cross_validate; the fitted
    parts of the last fit in `last` (probabilities of the test texts for the calibration report)."""

    def __init__(self, root: Path, hierarchy_stage: str, encode, features=None, fine_tune=None,
                 device: str = "cpu"):
        import torch

        from naics_pipeline.encoders import TextEmbeddings
        from naics_pipeline.text.classify import CodeTable
        from naics_pipeline.text.index import FEATURES, known_texts, written_fit_texts
        from naics_pipeline.training.checkpoint import embed_all, load_model

        layout = Layout(Path(root))
        self.descriptions = pq.read_table(layout.descriptions)
        self.table = CodeTable.from_descriptions(self.descriptions)
        model, blob = load_model(layout.stage_dir(hierarchy_stage) / "model.pt")
        emb = TextEmbeddings.load(layout.text_embeddings)
        emb.channels[:, 2] = 0.0
        emb.present[:, 2] = False
        points, _ = embed_all(model, emb, self.table.levels.astype(np.int64))
        self.six = np.nonzero(self.table.levels == 6)[0]
        self.leaf_points = points[self.six]
        self.curvature = blob["model_config"]["curvature"]
        with torch.no_grad():
            self.radius = float(model.level_radius(torch.tensor([6]))[0])
        self.encode = encode
        self.fine_tune = fine_tune   # () -> a fresh frozen MiniLMEncoder on the device, fine-tuned per fold
        self.device = device         # where the fusion and the reranker are fitted
        self.features = tuple(features or FEATURES)
        self.candidates = self.table.codes[self.six].tolist()
        self.groups = np.asarray(self.table.industry_group[self.six], dtype=str)
        self.levels = self.table.six_digit_levels()
        # the known texts of the codes themselves (titles, descriptions, cross-references): the same in every fold
        texts, codes, kinds = known_texts(self.descriptions)
        of_code = kinds != 0
        self.code_texts = ([t for t, r in zip(texts, of_code) if r], [c for c, r in zip(codes, of_code) if r],
                           kinds[of_code])
        self.written = written_fit_texts(encode, self.candidates)
        self.weights_seen: list[dict] = []

    def geometry_of(self, head):
        import torch

        from naics_pipeline.text.fusion import log_softmax
        from naics_pipeline.training.lorentz import pairwise_distance
        from naics_pipeline.training.text_alignment import TextConfig

        temperature = TextConfig().temperature

        @torch.no_grad()
        def geometry(vectors: np.ndarray) -> np.ndarray:
            q = head(torch.as_tensor(vectors, dtype=torch.float32), torch.tensor([self.radius], dtype=torch.float64),
                     c=self.curvature).numpy()
            return log_softmax(-pairwise_distance(q, self.leaf_points, c=self.curvature) / temperature)
        return geometry

    def __call__(self, train_texts: list[str], train_codes: list[str]):
        from naics_pipeline.data.entry_splits import validation_mask
        from naics_pipeline.text.index import KnownTexts, fit_index, written_fit_texts
        from naics_pipeline.training.text_alignment import fine_tune_query_head, fit_query_head

        pos = {c: i for i, c in enumerate(self.candidates)}
        code_texts, code_codes, code_kinds = self.code_texts
        texts, codes = list(train_texts) + code_texts, list(train_codes) + code_codes
        kinds = np.concatenate([np.zeros(len(train_texts), np.int8), code_kinds])
        val = np.zeros(len(texts), bool)
        val[:len(train_texts)] = validation_mask(list(train_texts), list(train_codes))
        head_rows = (kinds <= 1) & ~val
        leaf = np.array([pos[c] for c, r in zip(codes, head_rows) if r])
        encode, written = self.encode, self.written
        if self.fine_tune is None:
            vectors = encode(texts)
            head = fit_query_head(vectors[head_rows], leaf, self.leaf_points, self.radius, self.curvature)
        else:
            encoder = self.fine_tune()
            head = fine_tune_query_head([t for t, r in zip(texts, head_rows) if r], leaf, self.leaf_points,
                                        self.radius, self.curvature, encoder)
            encode = lambda t: encoder.encode(list(t), batch_size=4096)  # noqa: E731
            vectors, written = encode(texts), written_fit_texts(encode, self.candidates)
        geometry = self.geometry_of(head)
        index = fit_index(KnownTexts(texts, codes, kinds, vectors), val, geometry, self.candidates, self.groups,
                          self.features, written=written, device=self.device, levels=self.levels)
        scorer = index.scorer(self.candidates, self.groups)
        cands = np.array(self.candidates, dtype=object)
        self.last = {"index": index}
        self.weights_seen.append(dict(zip(index.features, np.round(index.weights, 2).tolist())))

        def predict(qtexts: list[str], k: int) -> np.ndarray:
            qv = encode(list(qtexts))
            p = index.probabilities(scorer(qv, list(qtexts), geometry(qv)))
            self.last["probabilities"] = p
            return cands[np.argsort(-p, 1)[:, :k]]
        return predict
