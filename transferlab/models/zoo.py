"""The local model zoo: a family of small Llama-style causal LMs, their tokenizer, data and manifest.

Layout of a zoo root (default ``<store>/zoo``)::

    manifest.json                    # {"models": {name: entry}}: corpus, sizes, params, tokens, losses, speed
    tokenizers/<key>/                # byte-level BPE, PreTrainedTokenizerFast.save_pretrained
    data/<key>.safetensors (+ .json) # a corpus encoded with a tokenizer: int32 train / val streams
    models/<name>/                   # save_pretrained (safetensors) + the tokenizer: loads with
                                     # AutoModelForCausalLM.from_pretrained / AutoTokenizer.from_pretrained

Models are trained elsewhere (``transferlab.studies.transfer.zoo_build.build_zoo`` drives the engine);
this module only describes the family, prepares and caches data, and reads what was built, so
every study can load zoo models from here.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from transferlab.core.errors import ConfigError, DataError, StoreError
from transferlab.store.atomic import write_json

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class SizeSpec:
    """One member of the family: a Llama decoder with tied input/output embeddings."""

    name: str
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int

    def non_embedding_params(self) -> int:
        """Attention (4 d^2) + SwiGLU MLP (3 d d_ff) + 2 RMSNorms per layer, plus the final norm."""
        per_layer = 4 * self.d_model**2 + 3 * self.d_model * self.d_ff + 2 * self.d_model
        return self.n_layers * per_layer + self.d_model

    def embedding_params(self, vocab_size: int) -> int:
        return vocab_size * self.d_model  # tied: the LM head shares it


FAMILY: dict[str, SizeSpec] = {
    s.name: s
    for s in (
        SizeSpec("xxs", 32, 1, 2, 96),
        SizeSpec("xs", 48, 2, 3, 128),
        SizeSpec("s", 64, 2, 4, 192),
        SizeSpec("m", 96, 3, 4, 256),
        SizeSpec("l", 128, 4, 4, 384),
        SizeSpec("xl", 192, 6, 6, 512),
    )
}
DEFAULT_SIZES = ("xxs", "xs", "s", "m", "l")


def size_spec(name: str) -> SizeSpec:
    if name not in FAMILY:
        raise ConfigError(
            f"unknown model size '{name}'",
            where="--sizes",
            fix=f"choose from {', '.join(FAMILY)} (comma-separated)",
        )
    return FAMILY[name]


def parse_sizes(sizes: str | list[str] | tuple[str, ...]) -> list[str]:
    items = [s.strip() for s in (sizes.split(",") if isinstance(sizes, str) else sizes) if s.strip()]
    if not items:
        raise ConfigError(
            "no model sizes given", where="--sizes", fix=f"e.g. --sizes {','.join(DEFAULT_SIZES)}"
        )
    for s in items:
        size_spec(s)
    if len(set(items)) != len(items):
        raise ConfigError(f"a size is repeated in {items}", where="--sizes", fix="list each size once")
    return items


def llama_config(spec: SizeSpec, vocab_size: int, seq_len: int, eos_id: int) -> Any:
    from transformers import LlamaConfig

    if spec.d_model % spec.n_heads:
        raise ConfigError(
            f"d_model {spec.d_model} is not divisible by n_heads {spec.n_heads}", where=spec.name
        )
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.d_model,
        intermediate_size=spec.d_ff,
        num_hidden_layers=spec.n_layers,
        num_attention_heads=spec.n_heads,
        num_key_value_heads=spec.n_heads,
        max_position_embeddings=seq_len,
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        attention_dropout=0.0,
        use_cache=False,
    )


def new_model(spec: SizeSpec, vocab_size: int, seq_len: int, eos_id: int, seed: int) -> Any:
    """A freshly initialized LlamaForCausalLM (deterministic for a seed)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(spec, vocab_size, seq_len, eos_id))
    return model.float()


def count_non_embedding(model: Any) -> int:
    """Parameters of a model other than its token (and tied output) embeddings."""
    emb = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not emb)


# ---- data and tokenizer cache ----------------------------------------------------------------
def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def corpus_key(spec: str, val_percent: float, max_files: int | None) -> str:
    """Cache key of a corpus: built-ins by interpreter, stdlib path and options; user corpora by content."""
    from transferlab.data.corpora import BUILTIN, load_corpus, stdlib_root

    if spec in BUILTIN:
        return _key("builtin-v1", spec, sys.version, str(stdlib_root()), val_percent, max_files)
    return _key("user", load_corpus(spec, val_percent=val_percent).fingerprint)


@dataclass
class TokenData:
    """A corpus encoded with the zoo tokenizer."""

    corpus: str
    corpus_key: str
    tokenizer: str  # tokenizer fingerprint
    train: torch.Tensor  # int32 [n]
    val: torch.Tensor
    info: dict[str, Any]


class Zoo:
    """A zoo root folder: tokenizer and data caches, built models and their manifest."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"zoo path {self.root} is a file", fix="pass --out with a folder path")

    # ---- tokenizer -------------------------------------------------------------------------
    def tokenizer_dir(
        self, vocab_size: int, corpora: tuple[str, ...], val_percent: float, max_files: int | None
    ) -> Path:
        keys = [corpus_key(c, val_percent, max_files) for c in corpora]
        return self.root / "tokenizers" / _key("bpe-v1", vocab_size, keys)

    def ensure_tokenizer(
        self,
        vocab_size: int = 4096,
        corpora: tuple[str, ...] = ("prose", "code"),
        val_percent: float = 10.0,
        max_files: int | None = None,
    ) -> tuple[Path, str]:
        """(folder, fingerprint) of the BPE trained on the corpora's training splits (built once)."""
        from transferlab.data.corpora import load_corpus
        from transferlab.data.tokenizer import save_tokenizer, train_tokenizer

        path = self.tokenizer_dir(vocab_size, corpora, val_percent, max_files)
        if not (path / "tokenizer.json").is_file():
            texts: list[str] = []
            for c in corpora:
                texts.extend(load_corpus(c, val_percent=val_percent, max_files=max_files).train)
            tok = train_tokenizer(texts, vocab_size)
            tmp = path.with_name(path.name + ".tmp")
            save_tokenizer(tok, tmp)
            if path.exists():
                import shutil

                shutil.rmtree(path)
            tmp.rename(path)
        return path, tokenizer_fingerprint(path)

    # ---- encoded corpora -------------------------------------------------------------------
    def ensure_tokens(
        self, spec: str, tokenizer_path: Path, val_percent: float = 10.0, max_files: int | None = None
    ) -> TokenData:
        from transferlab.data.corpora import load_corpus
        from transferlab.data.tokenizer import encode_documents, load_tokenizer

        tok_fp = tokenizer_fingerprint(tokenizer_path)
        ckey = corpus_key(spec, val_percent, max_files)
        base = self.root / "data" / f"{ckey}-{tok_fp}"
        st, meta = base.with_suffix(".safetensors"), base.with_suffix(".json")
        if st.is_file() and meta.is_file():
            t = load_file(str(st))
            info = json.loads(meta.read_text())
            return TokenData(spec, ckey, tok_fp, t["train"], t["val"], info)
        corpus = load_corpus(spec, val_percent=val_percent, max_files=max_files)
        tok = load_tokenizer(tokenizer_path)
        train, val = encode_documents(tok, corpus.train), encode_documents(tok, corpus.val)
        if len(val) < 2:
            raise DataError(f"corpus '{spec}' has no validation text", fix="raise val_percent or add files")
        info = {
            **corpus.info,
            "corpus": spec,
            "fingerprint": corpus.fingerprint,
            "train_docs": len(corpus.train),
            "val_docs": len(corpus.val),
            "train_tokens": int(len(train)),
            "val_tokens": int(len(val)),
            "train_chars": corpus.chars()[0],
            "val_chars": corpus.chars()[1],
        }
        st.parent.mkdir(parents=True, exist_ok=True)
        tmp = st.with_suffix(".tmp")
        save_file({"train": train, "val": val}, str(tmp))
        tmp.replace(st)
        write_json(meta, info)
        return TokenData(spec, ckey, tok_fp, train, val, info)

    # ---- models and manifest ---------------------------------------------------------------
    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def manifest(self) -> dict[str, dict[str, Any]]:
        p = self.root / MANIFEST
        if not p.is_file():
            return {}
        try:
            models = json.loads(p.read_text())["models"]
            if not isinstance(models, dict) or not all(isinstance(e, dict) for e in models.values()):
                raise TypeError("'models' is not a mapping of name -> entry")
            return models
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError, OSError) as err:
            raise StoreError(
                f"zoo manifest {p} is unreadable ({type(err).__name__}: {err})",
                fix="delete it; `transferlab zoo build` rewrites it from the finished runs",
            ) from None

    def record(self, entry: dict[str, Any]) -> None:
        models = self.manifest()
        models[entry["name"]] = entry
        write_json(self.root / MANIFEST, {"version": 1, "models": dict(sorted(models.items()))})

    def entries(self, corpus: str | None = None, size: str | None = None) -> list[dict[str, Any]]:
        out = [
            e
            for e in self.manifest().values()
            if (corpus is None or e["corpus"] == corpus) and (size is None or e["size"] == size)
        ]
        return sorted(out, key=lambda e: (e["non_embedding_params"], e["tokens_seen"]))

    def get(self, name: str) -> dict[str, Any]:
        models = self.manifest()
        if name not in models:
            known = ", ".join(models) or "none (run `transferlab zoo build`)"
            raise StoreError(f"no model '{name}' in the zoo at {self.root}", fix=f"known models: {known}")
        return models[name]

    def load(self, name: str, dtype: str = "float32") -> Any:
        """The model, via ``AutoModelForCausalLM.from_pretrained`` (safetensors, offline)."""
        from transferlab.models.hf_causal import load_causal_lm

        self.get(name)
        return load_causal_lm(self.model_dir(name), dtype=dtype)

    def load_tokenizer(self, name: str) -> Any:
        from transferlab.data.tokenizer import load_tokenizer

        self.get(name)
        return load_tokenizer(self.model_dir(name))


def tokenizer_fingerprint(path: Path) -> str:
    return hashlib.sha256((Path(path) / "tokenizer.json").read_bytes()).hexdigest()[:16]


def spec_dict(spec: SizeSpec) -> dict[str, Any]:
    return asdict(spec)
