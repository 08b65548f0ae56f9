"""``transferlab zoo build``: pretrain every size of the family on one corpus, with presets.

The ``full`` build (the default) trains each of the six sizes to 20 tokens per non-embedding parameter
(Chinchilla's compute-optimal ratio, Hoffmann et al. 2022) on the large built-in prose corpus, and scores
every model on held-out prose and code. The report fits held-out loss against N across the family.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from transferlab.core.config import PresetRegistry, StudyConfig
from transferlab.core.errors import DataError
from transferlab.store import Store
from transferlab.train.engine import Callback
from transferlab.zoo.settings import TrainSettings
from transferlab.zoo.sizes import DEFAULT_SIZES, parse_sizes, pretrain_tokens
from transferlab.zoo.store import TokenData, Zoo, corpus_key
from transferlab.zoo.train import LM_STUDY, check_memory, pretrain

CHINCHILLA_TOKENS_PER_PARAM = 20.0


def corpus_tag(spec: str, key: str) -> str:
    return spec if spec in ("prose", "code") else f"custom{key[:6]}"


class ZooConfig(StudyConfig):
    """Pretrain every size of the family on one corpus, to a number of tokens per parameter (or a fixed one)."""

    preset: str = Field("custom", description="the preset this config came from")
    sizes: list[str] = Field(default_factory=lambda: list(DEFAULT_SIZES), description="zoo sizes to train")
    tokens_per_param: float | None = Field(
        CHINCHILLA_TOKENS_PER_PARAM, gt=0, allow_inf_nan=False,
        description="training tokens per non-embedding parameter (None: use tokens)")
    tokens: int | None = Field(None, ge=1, description="a fixed number of training tokens for every size instead")
    corpus: str = Field("prose", description="prose | code | files:GLOB | hf:PATH[:COLUMN] | a mixture: prose+code")
    vocab_size: int = Field(4096, ge=300, le=1_000_000, description="BPE vocabulary size")
    tokenizer_corpora: list[str] = Field(default_factory=lambda: ["prose", "code"],
                                         description="corpora the tokenizer is trained on")
    heldout: list[str] = Field(default_factory=lambda: ["prose", "code"],
                               description="corpora whose validation split scores every model")
    val_percent: float = Field(10.0, gt=0, lt=100, description="percent of files held out for validation")
    max_files: int | None = Field(None, ge=1, description="use only the first stdlib files and no "
                                     "installed distribution (tests; the mini presets: 1000, all of the stdlib)")
    train: TrainSettings = Field(default_factory=TrainSettings, description="how each model trains")

    @field_validator("sizes", mode="before")
    @classmethod
    def _v_sizes(cls, v: list[str] | str) -> list[str]:
        return parse_sizes(v)

    @model_validator(mode="after")
    def _budget(self) -> ZooConfig:
        if (self.tokens is None) == (self.tokens_per_param is None):
            raise ValueError("set exactly one of tokens and tokens_per_param (the other to null)")
        for s in self.sizes:
            if self.tokens_for(s) < self.train.seq_len + 1:
                raise ValueError(f"size {s} gets {self.tokens_for(s)} tokens, less than one window of "
                                 f"{self.train.seq_len + 1}")
        return self

    def tokens_for(self, size: str) -> int:
        return pretrain_tokens(size, self.tokens, self.tokens_per_param)


PRESETS = PresetRegistry()
PRESETS.add(
    "full",
    "all 6 sizes (13k..1.55M non-embedding params, 116x) to 20 tokens per parameter on the large prose corpus; "
    "~61M tokens in all; 61 min on 2 cores from an empty store (measured 2026-12-01, docs/RESULTS.md)",
)
PRESETS.add(
    "mini",
    "the 3 smallest sizes (13k, 56k, 151k) to 20 tokens per parameter on the large prose corpus; ~4 min of "
    "training on 2 cores, plus ~3 min to extract and encode the corpus once",
    sizes=["xxs", "xs", "s"],
)
PRESETS.add(
    "micro",
    "test-sized: 2 tiny sizes, a few thousand tokens of 30 stdlib files, vocab 400; seconds",
    sizes=["xxs", "xs"], tokens_per_param=None, tokens=3_200, vocab_size=400, max_files=30,
    train={"seq_len": 16, "batch_size": 8, "min_steps": 4, "evals": 4, "eval_tokens": 340},
)


@dataclass
class ZooBuild:
    zoo: Zoo
    tokenizer_dir: Path
    tokenizer: Any
    data: TokenData
    entries: list[dict[str, Any]]
    fit: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "zoo": str(self.zoo.root),
            "tokenizer": str(self.tokenizer_dir),
            "corpus": self.data.corpus,
            "models": self.entries,
            "loss_vs_n": self.fit,
            "report": None if self.report is None else str(self.report),
        }


def check_corpora(cfg: ZooConfig, zoo: Zoo, extra: tuple[str, ...] = ()) -> None:
    """Refuse a bad corpus of ``cfg`` (or ``extra``) before anything is built: its form, the sources of a part
    such as ``code[sympy]``, and a part that selects no document (``code[^stdlib]`` with ``max_files``)."""
    planned = zoo.tokenizer_dir(cfg.vocab_size, tuple(cfg.tokenizer_corpora), cfg.val_percent, cfg.max_files)
    for spec in dict.fromkeys([cfg.corpus, *cfg.heldout, *extra]):
        corpus_key(spec, cfg.val_percent, cfg.max_files)
        zoo.check_parts(spec, planned, cfg.val_percent, cfg.max_files)


def prepare(cfg: ZooConfig, zoo: Zoo) -> tuple[Path, Any, TokenData, dict[str, TokenData]]:
    """Tokenizer, the training corpus's tokens and the held-out corpora's tokens (built once each)."""
    from transferlab.data.tokenizer import load_tokenizer

    check_corpora(cfg, zoo)  # a bad corpus fails before anything is built
    tok_dir, _ = zoo.ensure_tokenizer(cfg.vocab_size, tuple(cfg.tokenizer_corpora), cfg.val_percent, cfg.max_files)
    data = zoo.ensure_tokens(cfg.corpus, tok_dir, cfg.val_percent, cfg.max_files)
    heldout = {c: data if c == cfg.corpus else zoo.ensure_tokens(c, tok_dir, cfg.val_percent, cfg.max_files)
               for c in cfg.heldout}
    return tok_dir, load_tokenizer(tok_dir), data, heldout


def check_budget(cfg: ZooConfig, data: TokenData) -> None:
    """A budget the corpus cannot give even at ~4 passes is refused up front, with what the corpus has."""
    have = len(data.train)
    for s in cfg.sizes:
        need = cfg.tokens_for(s)
        if need > 16 * have:
            raise DataError(
                f"size {s} would train on {need:,} tokens but corpus '{cfg.corpus}' has {have:,} training tokens "
                f"({need / have:.0f} passes)", where="tokens",
                fix="lower tokens_per_param/tokens, or use a larger corpus (e.g. prose+code)")


def preflight(cfg: ZooConfig) -> None:
    """Refuse, before anything is built, a device that is not there or a size that cannot fit in memory
    (at the configured vocabulary, the most the tokenizer can reach)."""
    from transferlab.core.devices import resolve_device

    resolve_device(cfg.train.device, where="train.device")
    for s in cfg.sizes:
        check_memory(s, cfg.vocab_size, cfg.train.batch_for(cfg.tokens_for(s)), cfg.train.seq_len, where=f"size {s}")


def say_eta(cfg: ZooConfig, i: int, done: list[dict[str, Any]], vocab: int) -> None:
    """One status line before each size: its place in the build and, once a model has trained here, the
    build's remaining time from that model's measured FLOP/s (FLOPs per token x tokens of each size left)."""
    from transferlab.core.progress import say
    from transferlab.zoo.model import flops_per_token
    from transferlab.zoo.train import shape_of

    msg = f"zoo build: size {i + 1}/{len(cfg.sizes)} ({cfg.sizes[i]}, {cfg.tokens_for(cfg.sizes[i]):,} tokens)"
    trained = [e for e in done if not e.get("reused") and e.get("tokens_per_second")]
    if trained:
        e = trained[-1]
        rate = e["tokens_per_second"] * e["flops_per_token"]
        left = sum(cfg.tokens_for(s) * flops_per_token(shape_of(s, vocab, cfg.train.seq_len)) for s in cfg.sizes[i:])
        msg += f"; about {left / rate / 60:.0f} min left at {rate / 1e9:.1f} GFLOP/s"
    say(msg)


def build_zoo(cfg: ZooConfig, store: Store, zoo_root: str | Path | None = None,
              callbacks: list[Callback] | None = None, report: bool = True) -> ZooBuild:
    """Train (or reuse, or resume) every size of ``cfg`` and record it in the zoo's manifest."""
    from transferlab.zoo.analysis import loss_vs_n

    preflight(cfg)
    zoo = Zoo(zoo_root if zoo_root is not None else store.root / "zoo")
    zoo.manifest()  # a damaged manifest fails now, not when the first model is recorded after its training
    tok_dir, tok, data, heldout = prepare(cfg, zoo)
    check_budget(cfg, data)
    tag = corpus_tag(cfg.corpus, data.corpus_key)
    entries: list[dict[str, Any]] = []
    for i, s in enumerate(cfg.sizes):
        say_eta(cfg, i, entries, len(tok))
        entries.append(pretrain(zoo, store, s, data, tok, cfg.train, cfg.tokens_for(s), tag=tag, heldout=heldout,
                                callbacks=callbacks))
    out = ZooBuild(zoo, tok_dir, tok, data, entries, fit=loss_vs_n(entries, cfg.corpus))
    if report:
        from transferlab.zoo.report import write_zoo_report

        out.report = write_zoo_report(out, [store.run_dir(LM_STUDY, e["run_id"]) for e in entries])
    return out
