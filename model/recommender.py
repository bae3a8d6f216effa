"""Model construction shared by training and inference, and the ``Recommender`` used by the demo.

rec = Recommender.load(RUN_DIR)
rec.recommend(history=["item", ...], interests=["phrase", ...] or None, k=10)
    -> [(item_token, score), ...] best first
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from config import Config
from data.batches import Batch, SplitTensors, load_semantic_embeddings, load_split_tensors
from data.interest_features import InterestFeatures
from data.interests.recipe import SETTINGS_FILE
from data.paths import dataset_dir
from data.splits import PAD, load_emb_map
from model.checkpoint import BEST, load_best, read_config
from model.evaluation import Ranking, recommend_batch
from model.generator import GenerativeRecommender
from model.item_codes import PrefixTrie
from model.item_tokenizer import ItemTokenizer, build_tokenizer


def build_models(
    cfg: Config, semantic_dim: int, num_items: int = 0
) -> tuple[ItemTokenizer, GenerativeRecommender]:
    """The tokenizer and the recommender; ``num_items`` (items + padding) sizes the item head."""
    tokenizer = build_tokenizer(cfg, semantic_dim)
    model = GenerativeRecommender(cfg, cfg.code_levels + 1, cfg.code_size, semantic_dim, num_items)
    return tokenizer, model


class Recommender:
    """A trained run folder, ready to rank items for a history (and optional interests)."""

    def __init__(
        self,
        run_dir: Path,
        cfg: Config,
        model: GenerativeRecommender,
        item_codes: torch.Tensor,
        emb_map: dict[str, int],
        features: InterestFeatures | None = None,
        data_folder: Path | None = None,
    ):
        self.run_dir = run_dir
        self.data_folder = data_folder or dataset_dir(cfg.data_dir, cfg.dataset)
        self.features = features  # the run's phrase table and text model (with interest fusion)
        self.config = cfg
        self.model = model.eval()
        self.item_codes = item_codes
        self.trie = PrefixTrie(item_codes[1:], cfg.code_size)
        self.device = torch.device("cpu")
        self.emb_map = emb_map
        self.id_to_token = {i: t for t, i in emb_map.items()}
        self.item_tokens = [t for t in emb_map if t != PAD]

    @classmethod
    def load(cls, run_dir: str | Path, data_dir: str | Path | None = None) -> Recommender:
        run_dir = Path(run_dir)
        cfg = Config.wrap(read_config(run_dir))
        folder = dataset_dir(data_dir or cfg.data_dir, cfg.dataset)
        emb_map = load_emb_map(folder, cfg.dataset)
        semantic = load_semantic_embeddings(folder, cfg.dataset, cfg.semantic_emb, len(emb_map) - 1)
        tokenizer, model = build_models(cfg, semantic.shape[1], semantic.shape[0])
        item_codes = load_best(run_dir / BEST, model, tokenizer)
        features = (
            InterestFeatures.load(folder, cfg.dataset, run_dir / SETTINGS_FILE)
            if cfg.interest_fusion
            else None
        )
        return cls(run_dir, cfg, model, item_codes, emb_map, features, folder)

    def to(self, device: torch.device) -> Recommender:
        """Move the model and its trie together (``recommend`` builds its inputs there)."""
        self.model.to(device)
        self.trie.to(device)
        self.device = torch.device(device)
        return self

    @property
    def dataset(self) -> str:
        return self.config.dataset

    def split_tensors(self, folder: Path, split: str) -> SplitTensors:
        """A split of the run's dataset in ``folder`` as the model reads it (history length,
        interest phrases)."""
        return load_split_tensors(
            folder,
            self.dataset,
            split,
            self.emb_map,
            self.max_history,
            self.config.max_interests,
            self.features,
        )

    @property
    def max_history(self) -> int:
        return self.config.max_history

    @property
    def max_interests(self) -> int:
        """How many of the given interests the model reads (the first ones)."""
        return self.config.max_interests

    @property
    def uses_interests(self) -> bool:
        return bool(self.config.interest_fusion)

    def _interest_inputs(self, interests: list[str] | None) -> dict[str, torch.Tensor]:
        if self.features is None:
            return {}
        phrases = list(interests or [])[: self.config.max_interests]
        vectors = torch.zeros(1, self.config.max_interests, self.features.dim)
        mask = torch.zeros(1, self.config.max_interests, dtype=torch.bool)
        vectors[0, : len(phrases)] = self.features.vectors(phrases)
        mask[0, : len(phrases)] = True
        return {"interests": vectors, "interest_mask": mask}

    @torch.no_grad()
    def recommend(
        self,
        history: list[str],
        interests: list[str] | None = None,
        k: int = 10,
        num_beams: int | None = None,
        *,
        exclude: Iterable[str] = (),
    ) -> list[tuple[str, float]]:
        """The top ``k`` items after ``history`` (its last ``max_history`` items are read),
        best first, leaving out the items in ``exclude`` (e.g. everything already bought)."""
        exclude = list(exclude)
        unknown = [t for t in [*history, *exclude] if t not in self.emb_map or t == PAD]
        if unknown:
            raise KeyError(f"unknown item ids: {unknown[:5]}")
        ids = torch.tensor(
            [[self.emb_map[t] for t in history[-self.max_history :]]], dtype=torch.long
        )
        if ids.shape[1] == 0:
            ids = torch.zeros(1, 1, dtype=torch.long)
        batch = Batch(
            self.item_codes[ids], ids > 0, history_ids=ids, **self._interest_inputs(interests)
        )
        skip = torch.tensor([sorted({self.emb_map[t] for t in exclude}) or [0]], device=self.device)
        beams = max(num_beams or self.config.num_beams, k)
        items, scores = recommend_batch(
            self.model,
            self.trie,
            batch.to(self.device),
            beams,
            k,
            skip,
            ranking=Ranking.of(self.config),
            item_codes=self.item_codes,
        )
        return [
            (self.id_to_token[int(i)], float(s))
            for i, s in zip(items[0], scores[0], strict=True)
            if int(i) > 0
        ]
