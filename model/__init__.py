"""Models: the RQ-VAE item tokenizer, the T5 generative recommender, training and inference."""

from model.recommender import Recommender

__all__ = ["Recommender"]
