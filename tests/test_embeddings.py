"""Item embeddings (SASRec, text) and interest-phrase embeddings: they learn, align and cache."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from config import Config
from data import embeddings, text_embedding
from data.batches import resolve_semantic_stem
from data.jsonl import DataError, write_json
from data.splits import load_emb_map, load_items, load_split
from model import sasrec
from model.metrics import rank_of_target, ranking_metrics
from model.sasrec import SASRec

# Small enough for a shared CPU; big enough that a few epochs clearly learn.
TINY = [
    "--embeddings.kind=sasrec",
    "--embeddings.sasrec_dim=64",
    "--embeddings.sasrec_maxlen=20",
    "--embeddings.sasrec_lr=0.003",
    "--embeddings.sasrec_negatives=0",
]


@pytest.fixture
def ecfg(data_config: Callable[..., Config]) -> Callable[..., Config]:
    """``ecfg(*argv)``: the embeddings section of a scientific18 data_process config."""
    return lambda *argv: data_config("scientific18", Path("unused"), *argv).embeddings


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on two shared cores a second one mostly spins waiting for the first."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def sci18_copy(scientific18_dir: Path, tmp_path: Path) -> Path:
    """A private copy, so checkpoints and outputs of one test never meet another's."""
    folder = tmp_path / "scientific18"
    folder.mkdir()
    for f in scientific18_dir.glob("scientific18.*"):
        (folder / f.name).write_bytes(f.read_bytes())
    return folder


class FakeEncoder:
    """Stands in for the sentence-transformer: a fixed vector per text, and a record of each text
    it was asked to encode, so a test can see exactly what the cache let through."""

    dim = 8

    def __init__(self) -> None:
        self.seen: list[str] = []

    def get_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, texts: list[str], **_) -> np.ndarray:
        self.seen.extend(texts)
        return np.stack([self.vector(t) for t in texts])

    @classmethod
    def vector(cls, text: str) -> np.ndarray:
        v = np.random.default_rng(zlib.crc32(text.encode())).standard_normal(cls.dim)
        return (v / np.linalg.norm(v)).astype(np.float32)


@pytest.fixture
def fake_encoder(monkeypatch) -> FakeEncoder:
    fake = FakeEncoder()
    monkeypatch.setattr(text_embedding, "load_text_encoder", lambda *a, **k: fake)
    return fake


def popularity_valid_recall10(folder: Path) -> float:
    emb_map = load_emb_map(folder, "scientific18")
    counts = np.zeros(len(emb_map) - 1)
    for row in load_split(folder, "scientific18", "train"):
        counts[emb_map[row["target_id"]] - 1] += 1
    targets = np.array(
        [emb_map[r["target_id"]] - 1 for r in load_split(folder, "scientific18", "valid")]
    )
    ranks = rank_of_target(np.broadcast_to(counts, (len(targets), len(counts))), targets)
    return ranking_metrics(ranks, [10])["recall@10"]


def test_sasrec_learns_beats_popularity_and_writes_aligned_table(sci18_copy: Path, ecfg) -> None:
    cfg = ecfg(*TINY, "--embeddings.sasrec_epochs=4")
    table, returned = sasrec.train_sasrec(sci18_copy, "scientific18", cfg, seed=7)
    out = embeddings.save_item_embeddings(sci18_copy, "scientific18", table, cfg.kind)

    assert out.name == "scientific18_emb_64.npy"
    table = np.load(out)
    emb_map = load_emb_map(sci18_copy, "scientific18")
    assert table.dtype == np.float32 and table.shape == (len(emb_map), 64)
    assert not table[0].any() and np.abs(table[1:]).sum(axis=1).min() > 0

    result = json.loads((sci18_copy / "sasrec_metrics.json").read_text())
    losses = [e["loss"] for e in result["log"]]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.3
    n_items = len(emb_map) - 1
    assert result["valid"]["recall@10"] > 5 * 10 / n_items  # far above random ranking
    assert result["valid"]["recall@10"] > popularity_valid_recall10(sci18_copy)
    assert set(result["test"]) == {"recall@5", "ndcg@5", "recall@10", "ndcg@10"}
    assert result["test_skip_history"]["recall@10"] >= result["test"]["recall@10"]
    assert not (sci18_copy / "sasrec.ckpt.pt").exists()
    ranks = returned.pop("test_ranks")  # returned for breakdown.py, not written
    assert len(ranks) == len(load_split(sci18_copy, "scientific18", "test"))
    assert ranking_metrics(ranks, [5, 10]) == pytest.approx(result["test"])


def test_sasrec_target_ranks_follow_the_split_file_order() -> None:
    """Rows are ranked in batches sorted by length; each rank goes back to its row's place."""
    torch.manual_seed(0)
    model = SASRec(n_items=30, dim=16, layers=1, heads=2, maxlen=6, dropout=0.0).eval()
    emb_map = {"[PAD]": 0} | {str(i): i for i in range(1, 31)}
    histories = [[3, 4, 5, 6, 7], [9], [2, 8, 1], [11, 12], [5, 5, 5, 5, 5, 5, 5, 5]]
    rows = [
        {"inter_history": [str(i) for i in h], "target_id": str(t)}
        for h, t in zip(histories, [10, 20, 3, 30, 1], strict=True)
    ]
    split = sasrec.eval_arrays(rows, emb_map, maxlen=6)
    ranks = sasrec.target_ranks(model, split, batch_size=2)
    for row, (history, got) in enumerate(zip(histories, ranks, strict=True)):
        with torch.no_grad():
            scores = model.last_scores(torch.tensor([history[-6:]])).numpy()
        target = int(rows[row]["target_id"])
        assert got == rank_of_target(scores, np.array([target - 1]))[0], row


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_sasrec_resumes_after_interruption_without_repeating_epochs(
    sci18_copy: Path, ecfg, monkeypatch, schedule: str
) -> None:
    cfg = ecfg(
        *TINY,
        "--embeddings.sasrec_dim=32",
        "--embeddings.sasrec_epochs=2",
        "--embeddings.sasrec_negatives=500",
        f"--embeddings.sasrec_schedule={schedule}",  # cosine: the resumed rate must continue
    )
    straight, _ = sasrec.train_sasrec(sci18_copy, "scientific18", cfg, seed=3)

    real_epoch = sasrec.train_epoch
    calls: list[str] = []

    def dies_in_epoch_2(*args, **kwargs) -> float:
        calls.append(args[-1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(sasrec, "train_epoch", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        sasrec.train_sasrec(sci18_copy, "scientific18", cfg, seed=3)
    assert (sci18_copy / "sasrec.ckpt.pt").exists()

    calls.clear()
    monkeypatch.setattr(
        sasrec, "train_epoch", lambda *a, **k: calls.append(a[-1]) or real_epoch(*a, **k)
    )
    resumed, result = sasrec.train_sasrec(sci18_copy, "scientific18", cfg, seed=3)
    assert calls == ["sasrec epoch 2"]
    assert [e["epoch"] for e in result["log"]] == [1, 2]
    np.testing.assert_allclose(resumed, straight, atol=1e-6)
    assert not (sci18_copy / "sasrec.ckpt.pt").exists()


def test_cosine_schedule_anneals_to_zero_and_unknown_kind_is_named() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = sasrec.lr_schedule(opt, "cosine", total_steps=10)
    rates = []
    for _ in range(10):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates[0] == pytest.approx(0.5) and rates[5] == pytest.approx(0.25)
    assert all(a > b for a, b in zip(rates[:-1], rates[1:], strict=True))
    assert opt.param_groups[0]["lr"] < 1e-12
    with pytest.raises(ValueError, match="sasrec_schedule.*'linear'"):
        sasrec.lr_schedule(opt, "linear", total_steps=10)


def test_sasrec_last_state_ignores_padding_and_the_future() -> None:
    torch.manual_seed(0)
    model = SASRec(n_items=50, dim=32, layers=2, heads=2, maxlen=10, dropout=0.3).eval()
    seq = torch.tensor([[0, 0, 0, 0, 0, 5, 9, 2, 7, 3]])
    with torch.no_grad():
        full = model(seq)
        cropped = model(seq[:, -5:])
        changed = model(torch.tensor([[0, 0, 0, 0, 0, 5, 9, 2, 7, 41]]))
    assert torch.isfinite(full).all()
    torch.testing.assert_close(full[:, -5:], cropped)
    torch.testing.assert_close(full[:, :-1], changed[:, :-1])
    assert not torch.allclose(full[:, -1], changed[:, -1])
    assert model.last_scores(seq).shape == (1, 50)


def test_sampled_softmax_with_log_q_estimates_the_full_softmax() -> None:
    """E over j~q of exp(s_j - log q_j) = sum_j exp(s_j), so with k draws the sampled loss equals
    the full cross-entropy plus log(k q_target); a missing or wrong-signed correction is far off."""
    torch.manual_seed(0)
    model = SASRec(n_items=300, dim=16, layers=1, heads=1, maxlen=5, dropout=0.0)
    hidden = 30 * torch.randn(64, 16)
    targets = torch.randint(1, 301, (64,))
    proposal = torch.rand(300) ** 3 + 1e-3
    proposal /= proposal.sum()
    k = 200_000
    with torch.no_grad():
        full = model.loss(hidden, targets, 0, proposal)
        sampled = model.loss(hidden, targets, k, proposal)
    expected = full + (k * proposal[targets - 1]).log().mean()
    assert abs(sampled.item() - expected.item()) < 0.05
    assert abs(sampled.item() - full.item() - np.log(k / 300)) > 0.3  # skew matters


def test_bce_loss_is_the_binary_loss_over_one_uniform_negative() -> None:
    """The original SASRec loss: its mean over many draws is E over uniform j of
    -log sigma(s_target) - log(1 - sigma(s_j)), computed here from the full score table."""
    torch.manual_seed(0)
    model = SASRec(n_items=40, dim=8, layers=1, heads=1, maxlen=5, dropout=0.0)
    hidden, targets = 3 * torch.randn(16, 8), torch.randint(1, 41, (16,))
    proposal = torch.rand(40)  # ignored: negatives are uniform
    with torch.no_grad():
        scores = model.scores(hidden)
        pos = scores.gather(1, (targets - 1)[:, None]).squeeze(1)
        expected = F.softplus(-pos).mean() + F.softplus(scores).mean()
        draws = torch.stack(
            [model.loss(hidden, targets, 0, proposal, kind="bce") for _ in range(4000)]
        )
    assert abs(draws.mean().item() - expected.item()) < 0.01
    assert draws.std() > 0  # a fresh negative per call


def test_label_smoothing_mixes_target_and_uniform_cross_entropy() -> None:
    torch.manual_seed(0)
    model = SASRec(n_items=50, dim=8, layers=1, heads=1, maxlen=5, dropout=0.0)
    hidden, targets = 5 * torch.randn(16, 8), torch.randint(1, 51, (16,))
    proposal = torch.full((50,), 1 / 50)
    with torch.no_grad():
        logp = model.scores(hidden).log_softmax(-1)
        nll = -logp.gather(1, (targets - 1)[:, None]).mean()
        smoothed = model.loss(hidden, targets, 0, proposal, label_smoothing=0.2)
    assert abs(smoothed.item() - (0.8 * nll - 0.2 * logp.mean()).item()) < 1e-5
    with pytest.raises(ValueError, match="full softmax"):
        model.loss(hidden, targets, 10, proposal, label_smoothing=0.2)


def test_encode_texts_encodes_each_text_once_across_calls(tmp_path: Path, fake_encoder) -> None:
    cache = tmp_path / "cache" / "texts"
    first = text_embedding.encode_texts(["gloves", "beakers", "gloves"], cache)
    assert fake_encoder.seen == ["beakers", "gloves"]  # longest first, as sentence-transformers
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_array_equal(first[1], FakeEncoder.vector("beakers"))

    second = text_embedding.encode_texts(["beakers", "pipettes"], cache)
    assert fake_encoder.seen == ["beakers", "gloves", "pipettes"]
    np.testing.assert_array_equal(second[0], first[1])

    third = text_embedding.encode_texts(["pipettes", "gloves", "beakers"], cache)
    assert len(fake_encoder.seen) == 3
    assert third.shape == (3, FakeEncoder.dim) and third.dtype == np.float32
    np.testing.assert_array_equal(third[1], first[0])
    assert text_embedding.encode_texts([], cache).shape == (0, FakeEncoder.dim)


def test_interest_phrases_file_aligns_with_real_sentence_vectors(tmp_path: Path, ecfg) -> None:
    interests = [["lab glassware", "soldering"], ["soldering", "microscopes"], []]
    text_embedding.embed_interest_phrases(tmp_path, "toy", interests, ecfg())

    phrases = json.loads((tmp_path / "toy.interest_phrases.json").read_text())
    vectors = np.load(tmp_path / "toy.interest_emb.npy")
    assert phrases == ["lab glassware", "microscopes", "soldering"]
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for phrase, vector in zip(phrases, vectors, strict=True):
        np.testing.assert_allclose(text_embedding.interest_vectors([phrase])[0], vector, atol=1e-4)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[1, 2]  # glassware is nearer microscopes than soldering


def test_text_item_embeddings_align_with_emb_map(sci18_copy: Path, ecfg, fake_encoder) -> None:
    items = load_items(sci18_copy, "scientific18")
    items["0"] = {"title": "", "brand": "", "categories": [], "description": "", "features": []}
    cfg = ecfg("--embeddings.kind=text")
    table = embeddings.text_embeddings(sci18_copy, "scientific18", items, cfg)
    out = embeddings.save_item_embeddings(sci18_copy, "scientific18", table, cfg.kind)

    emb_map = load_emb_map(sci18_copy, "scientific18")
    table = np.load(out)
    assert out.name == f"scientific18_emb_{FakeEncoder.dim}.npy"
    assert table.shape == (len(emb_map), FakeEncoder.dim)
    assert not table[0].any() and not table[emb_map["0"]].any()  # PAD and the item without text
    for token in ("1", "2", "4343"):
        text = embeddings.item_text(items[token])
        assert text.startswith(items[token]["title"].strip())
        np.testing.assert_array_equal(table[emb_map[token]], FakeEncoder.vector(text))
    distinct = {embeddings.item_text(items[t]) for t in emb_map if t not in ("[PAD]", "0")}
    assert sorted(fake_encoder.seen) == sorted(distinct)  # each distinct text exactly once


def test_text_embeddings_refuse_a_catalogue_without_text(
    tmp_path: Path, ecfg, fake_encoder
) -> None:
    write_json(tmp_path / "ids.emb_map.json", {"[PAD]": 0, "B01": 1, "B02": 2})
    cfg = ecfg("--embeddings.kind=text")
    with pytest.raises(DataError, match="no item text.*kind=sasrec"):
        embeddings.text_embeddings(tmp_path, "ids", {"B01": {"title": ""}}, cfg)
    assert fake_encoder.seen == []
    assert not list(tmp_path.glob("ids_emb_*.npy"))


TEXTS = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff", "ggggggg"]


def test_text_cache_keeps_finished_chunks_through_a_kill(
    tmp_path: Path, fake_encoder: FakeEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chunk joins the cache as it is encoded: a run killed in its third chunk resumes with
    the rest only, and ends with the files and vectors of a run never killed; a torn tail
    (vectors without their texts, half a line) is cut."""
    monkeypatch.setattr(text_embedding, "CHUNK_BATCHES", 1)
    straight = text_embedding.encode_texts(TEXTS, tmp_path / "straight", batch_size=2)
    real_encode = fake_encoder.encode

    def killed_in_third_chunk(texts: list[str], **kw) -> np.ndarray:
        if len(fake_encoder.seen) == 4:
            raise KeyboardInterrupt
        return real_encode(texts, **kw)

    fake_encoder.seen.clear()
    monkeypatch.setattr(fake_encoder, "encode", killed_in_third_chunk)
    cache = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        text_embedding.encode_texts(TEXTS, cache, batch_size=2)
    vec_file, text_file = text_embedding.cache_files(cache)
    with open(vec_file, "ab") as f:
        f.write(np.ones(FakeEncoder.dim + 3, np.float32).tobytes())
    with open(text_file, "a") as f:
        f.write('"half a li')

    monkeypatch.setattr(fake_encoder, "encode", real_encode)
    resumed = text_embedding.encode_texts(TEXTS, cache, batch_size=2)
    assert fake_encoder.seen == ["ggggggg", "ffffff", "eeeee", "dddd", "ccc", "bb", "a"]
    np.testing.assert_array_equal(resumed, straight)
    pairs = zip(
        text_embedding.cache_files(cache),
        text_embedding.cache_files(tmp_path / "straight"),
        strict=True,
    )
    for killed, uninterrupted in pairs:
        assert killed.read_bytes() == uninterrupted.read_bytes()


def test_text_cache_of_the_earlier_format_is_kept(tmp_path: Path, fake_encoder) -> None:
    cache = tmp_path / "old"
    np.save(f"{cache}.npy", np.stack([FakeEncoder.vector("gloves")]))
    Path(f"{cache}.json").write_text(json.dumps({"model": "all-MiniLM-L6-v2", "texts": ["gloves"]}))
    out = text_embedding.encode_texts(["gloves", "beakers"], cache)
    assert fake_encoder.seen == ["beakers"]
    np.testing.assert_array_equal(out[0], FakeEncoder.vector("gloves"))
    assert not Path(f"{cache}.npy").exists() and not Path(f"{cache}.json").exists()


def test_chunked_encoding_gives_the_vectors_of_one_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks are whole batches in sentence-transformers' own order, so the cached vectors are
    bit for bit those of one ``encode`` call over all texts (as before chunking)."""
    monkeypatch.setattr(text_embedding, "CHUNK_BATCHES", 2)
    words = ["lab", "glass", "solder", "wire", "gloves", "tape", "beaker", "clamp"]
    texts = [" ".join(words[: 1 + (i * 7) % 8]) + f" {i % 5}" for i in range(40)]
    chunked = text_embedding.encode_texts(texts, tmp_path / "c", batch_size=4)
    distinct = list(dict.fromkeys(texts))
    whole = text_embedding.load_text_encoder().encode(
        distinct, batch_size=4, normalize_embeddings=True
    )
    np.testing.assert_array_equal(chunked, whole[[distinct.index(t) for t in texts]])


def test_train_finds_the_item_table_data_process_wrote(tmp_path: Path) -> None:
    """``semantic_emb: auto`` takes the one ``<name>_emb_<dim>.npy`` of the folder, whatever its
    dimension (``--embeddings.kind=text`` writes emb_384); none or several is a one-line error."""
    with pytest.raises(DataError, match="no toy_emb_<dim>.npy item table"):
        resolve_semantic_stem(tmp_path, "toy", "auto")
    np.save(tmp_path / "toy_emb_384.npy", np.zeros((3, 384), dtype=np.float32))
    assert resolve_semantic_stem(tmp_path, "toy", "auto") == "emb_384"
    assert resolve_semantic_stem(tmp_path, "toy", "emb_256") == "emb_256"  # named: taken as is
    np.save(tmp_path / "toy_emb_256.npy", np.zeros((3, 256), dtype=np.float32))
    with pytest.raises(DataError, match="toy_emb_256.npy, toy_emb_384.npy.*--semantic_emb"):
        resolve_semantic_stem(tmp_path, "toy", "auto")
