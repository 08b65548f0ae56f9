"""A byte-level BPE tokenizer trained with ``tokenizers``, saved as a Hugging Face tokenizer.

Byte-level: every string round-trips exactly (no unknown tokens). One special token,
``<|endoftext|>``, separates documents and serves as BOS/EOS/PAD. Training is deterministic for a
given text order (checked by the tests); the saved folder loads with
``AutoTokenizer.from_pretrained(path)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from transferlab.core.errors import ConfigError, DataError

EOT = "<|endoftext|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2) -> Any:
    """A ``PreTrainedTokenizerFast`` with a byte-level BPE vocabulary of ``vocab_size`` tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 300:
        raise ConfigError(
            f"vocab_size {vocab_size} is below the 256 bytes + merges a BPE needs",
            where="vocab_size",
            fix="use >= 300 (e.g. 4096)",
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOT,
        eos_token=EOT,
        pad_token=EOT,
        unk_token=None,
        model_max_length=1_000_000,
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(tok: Any, path: str | Path) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(p))
    return p


def load_tokenizer(path: str | Path) -> Any:
    from transformers import PreTrainedTokenizerFast

    p = Path(path)
    if not (p / "tokenizer.json").is_file():
        raise DataError(
            f"no tokenizer.json in {p}", fix="build it again (delete the folder) or pass another path"
        )
    return PreTrainedTokenizerFast.from_pretrained(str(p), local_files_only=True)


def encode_documents(tok: Any, docs: Sequence[str], batch: int = 256) -> torch.Tensor:
    """One int32 token stream: each document's ids followed by ``<|endoftext|>``."""
    backend = tok.backend_tokenizer
    eot = tok.convert_tokens_to_ids(EOT)
    out: list[int] = []
    for i in range(0, len(docs), batch):
        for enc in backend.encode_batch(list(docs[i : i + batch]), add_special_tokens=False):
            out.extend(enc.ids)
            out.append(eot)
    return torch.tensor(out, dtype=torch.int32)
