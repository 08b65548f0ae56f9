"""A zoo root folder: corpora, tokenizer and token caches, built models and their manifest.

Layout of a zoo root (default ``<store>/zoo``)::

    manifest.json                    # {"models": {name: entry}}: corpus, size, params, tokens, losses, speed
    corpora/<key>/                   # the built-in corpora's extracted text (prose.jsonl, code.jsonl, info.json)
    tokenizers/<key>/                # byte-level BPE, PreTrainedTokenizerFast.save_pretrained
    data/<key>.safetensors (+ .json) # a corpus encoded with a tokenizer: int32 train / val streams
    models/<name>/                   # save_pretrained (safetensors) + the tokenizer: loads with
                                     # AutoModelForCausalLM.from_pretrained / AutoTokenizer.from_pretrained
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from transferlab.core.errors import DataError, StoreError
from transferlab.store.atomic import write_json

MANIFEST = "manifest.json"
# the tokenizer is trained on at most this many characters of its corpora's training splits (every k-th
# document, in order): BPE merges settle long before 176M characters, and training on all of them took minutes
TOKENIZER_CHARS = 40_000_000


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``, waited for (POSIX; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def corpus_key(spec: str, val_percent: float, max_files: int | None) -> str:
    """Cache key of a corpus: built-ins by what feeds them (Python, distributions and versions, options);
    user corpora by content. A mixture's key is its parts'."""
    from transferlab.data.corpora import BUILTIN, SOURCE, builtin_key, builtin_part, load_corpus, mixture_parts

    if spec in BUILTIN or spec == SOURCE or builtin_part(spec) is not None:
        return _key("builtin-v2", spec, builtin_key(val_percent, max_files))
    if "+" in spec and not spec.startswith(("files:", "hf:")):
        return _key("mix", [corpus_key(p, val_percent, max_files) for p in mixture_parts(spec)])
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


def tokenizer_fingerprint(path: Path) -> str:
    return hashlib.sha256((Path(path) / "tokenizer.json").read_bytes()).hexdigest()[:16]


def _sample(docs: list[str], max_chars: int) -> list[str]:
    total = sum(map(len, docs))
    if total <= max_chars:
        return docs
    stride = -(-total // max_chars)
    return docs[::stride]


class Zoo:
    """A zoo root folder (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"zoo path {self.root} is a file", where="--zoo", fix="pass a folder path")

    @property
    def corpus_cache(self) -> Path:
        return self.root / "corpora"

    def corpus(self, spec: str, val_percent: float = 10.0, max_files: int | None = None) -> Any:
        from transferlab.data.corpora import load_corpus

        return load_corpus(spec, val_percent=val_percent, max_files=max_files, cache_dir=self.corpus_cache)

    def check_parts(self, spec: str, tokenizer_path: Path, val_percent: float = 10.0,
                    max_files: int | None = None) -> None:
        """Select each part of a built-in corpus in ``spec`` (``code[sympy]``), unless ``spec`` is already
        encoded, so that a selection that leaves no document fails before a tokenizer or a model is built."""
        from transferlab.data.corpora import builtin_part, mixture_parts

        parts = mixture_parts(spec) if "+" in spec and not spec.startswith(("files:", "hf:")) else [spec]
        parts = [p for p in parts if builtin_part(p) is not None]
        if not parts or ((tokenizer_path / "tokenizer.json").is_file() and self.tokens_path(
                spec, tokenizer_path, val_percent, max_files).with_suffix(".safetensors").is_file()):
            return
        for part in parts:
            self.corpus(part, val_percent, max_files)

    # ---- tokenizer -------------------------------------------------------------------------
    def tokenizer_dir(
        self, vocab_size: int, corpora: tuple[str, ...], val_percent: float, max_files: int | None
    ) -> Path:
        keys = [corpus_key(c, val_percent, max_files) for c in corpora]
        return self.root / "tokenizers" / _key("bpe-v2", vocab_size, keys, TOKENIZER_CHARS)

    def ensure_tokenizer(
        self,
        vocab_size: int = 4096,
        corpora: tuple[str, ...] = ("prose", "code"),
        val_percent: float = 10.0,
        max_files: int | None = None,
    ) -> tuple[Path, str]:
        """(folder, fingerprint) of the BPE trained on the corpora's training splits (built once)."""
        from transferlab.data.tokenizer import save_tokenizer, train_tokenizer

        path = self.tokenizer_dir(vocab_size, corpora, val_percent, max_files)
        if not (path / "tokenizer.json").is_file():
            texts: list[str] = []
            for c in corpora:
                texts.extend(_sample(self.corpus(c, val_percent, max_files).train, TOKENIZER_CHARS // len(corpora)))
            tok = train_tokenizer(texts, vocab_size)
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            save_tokenizer(tok, tmp)
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
        return path, tokenizer_fingerprint(path)

    # ---- encoded corpora -------------------------------------------------------------------
    def tokens_path(self, spec: str, tokenizer_path: Path, val_percent: float, max_files: int | None) -> Path:
        ckey = corpus_key(spec, val_percent, max_files)
        return self.root / "data" / f"{ckey}-{tokenizer_fingerprint(tokenizer_path)}"

    def ensure_tokens(
        self, spec: str, tokenizer_path: Path, val_percent: float = 10.0, max_files: int | None = None
    ) -> TokenData:
        from transferlab.data.tokenizer import encode_documents, load_tokenizer

        tok_fp = tokenizer_fingerprint(tokenizer_path)
        ckey = corpus_key(spec, val_percent, max_files)
        base = self.tokens_path(spec, tokenizer_path, val_percent, max_files)
        st, meta = base.with_suffix(".safetensors"), base.with_suffix(".json")
        if st.is_file() and meta.is_file():
            t = load_file(str(st))
            info = json.loads(meta.read_text())
            return TokenData(spec, ckey, tok_fp, t["train"], t["val"], info)
        corpus = self.corpus(spec, val_percent, max_files)
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
        if p.exists() and not p.is_file():
            raise StoreError(f"zoo manifest {p} is not a file", where=str(p),
                             fix="move it away; `transferlab zoo build` rewrites the manifest from the finished runs")
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
                where=str(p),
                fix="delete it; `transferlab zoo build` rewrites it from the finished runs",
            ) from None

    def record(self, entry: dict[str, Any]) -> None:
        """Add ``entry`` to the manifest: read, change and write under a file lock, so two processes
        building into one zoo (``transfer --set workers=2``, two commands at once) lose no entry."""
        self.root.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.root / ".manifest.lock"):
            models = self.manifest()
            models[entry["name"]] = entry
            write_json(self.root / MANIFEST, {"version": 2, "models": dict(sorted(models.items()))})

    def entries(self, corpus: str | None = None, size: str | None = None) -> list[dict[str, Any]]:
        out = [
            e
            for e in self.manifest().values()
            if (corpus is None or e.get("corpus") == corpus) and (size is None or e.get("size") == size)
        ]
        return sorted(out, key=lambda e: (e.get("non_embedding_params", 0), e.get("tokens_seen", 0)))

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
