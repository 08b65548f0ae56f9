"""Weak and strong models from the model zoo (or any local causal LM) as the frozen-feature backend.

A model is named ``zoo:<size>`` (resolved through :class:`transferlab.zoo.Zoo`, at
``zoo_root`` or ``<store>/zoo``), ``zoo:<model name>`` (one exact zoo entry), or a local Hugging Face
causal-LM folder. Its features for a text are the mean of the last hidden state over the positions
where ``attention_mask == 1`` (never the position of some token id), computed in length-sorted,
right-padded batches: a causal model's real tokens never attend to the pads that follow them, so a text
gets the same vector alone or padded in a batch. Features are cached in the store as safetensors under
the same ``w2s-features`` study, config class and file name as the MiniLM features
(:func:`transferlab.studies.w2s.tasks.text_layers`), keyed by the texts, the model's weights and the
pooling.

The ladder of views is weak, any ``mid_models``, strong (ordered by non-embedding parameters).
:func:`transferlab.studies.w2s.heads_trainer.ladder_sweep` measures PGR for every (smaller weak, larger
strong) pair on that ladder against the ratio of their non-embedding parameters.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from transferlab.core.errors import ConfigError
from transferlab.core.paths import default_store
from transferlab.data.classification import ClassificationData
from transferlab.store.run import Store
from transferlab.studies.w2s.config import FEATURES_STUDY, W2SConfig
from transferlab.studies.w2s.tasks import FEATURES_FILE, FeatureCacheConfig, Views

ZOO_PREFIX = "zoo:"
POOLING = "causal-lm/last-hidden/mean-by-attention-mask/right-pad/v1"
FEATURE_KEY = "layers"  # same tensor name as the MiniLM cache: (n, 1, H) -- one pooled layer


class ZooModelError(ConfigError):
    """A weak/strong model reference does not resolve to a usable causal LM."""


@dataclass(frozen=True)
class ModelRef:
    """One resolved model: where its weights are and how big it is."""

    ref: str  # as written in the config
    path: Path
    label: str  # the view name: the zoo size, or the folder name
    non_embedding_params: int
    zoo_name: str | None = None

    def identity(self) -> dict[str, Any]:
        from transferlab.studies.w2s.tasks import encoder_identity

        return {
            "ref": self.ref,
            "label": self.label,
            "zoo_name": self.zoo_name,
            "non_embedding_params": self.non_embedding_params,
            **encoder_identity(str(self.path)),
        }


@dataclass
class ModelViews(Views):
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # view label -> identity


def uses_models(cfg: W2SConfig) -> bool:
    """True when the heads backend takes its weak/strong features from causal LMs (zoo or path)."""
    return cfg.backend == "heads" and bool(cfg.weak.model or cfg.strong.model or cfg.strong.mid_models)


def zoo_root(cfg: W2SConfig, store: Store | None) -> Path:
    if cfg.zoo_root:
        return Path(cfg.zoo_root)
    return (store.root if store is not None else default_store()) / "zoo"


def _build_hint(size: str) -> str:
    return f"build it: transferlab zoo build --sizes {size} (or set zoo_root=<zoo folder>)"


def resolve_model(ref: str, root: Path, corpus: str | None = None, *, role: str = "model") -> ModelRef:
    """``zoo:<size>``, ``zoo:<name>`` or a local causal-LM folder -> :class:`ModelRef` (one-line errors)."""
    from transferlab.zoo import FAMILY, Zoo

    if ref.startswith(ZOO_PREFIX):
        key = ref[len(ZOO_PREFIX) :].strip()
        where = f"{role}_model={ref}"
        if not key:
            raise ZooModelError(
                "empty zoo reference", where=where, fix=f"write zoo:<size>, one of {', '.join(FAMILY)}"
            )
        zoo = Zoo(root)
        manifest = zoo.manifest()
        if not manifest:
            size = key if key in FAMILY else "xs,s,m"
            raise ZooModelError(f"no model zoo at {root}", where=where, fix=_build_hint(size))
        if key in manifest:
            entry = manifest[key]
        else:
            if key not in FAMILY:
                raise ZooModelError(
                    f"'{key}' is neither a zoo size nor a model in the zoo at {root}",
                    where=where,
                    fix=f"use a size ({', '.join(FAMILY)}) or a name from `transferlab zoo ls`",
                )
            entries = [e for e in zoo.entries(corpus=corpus, size=key) if e.get("kind", "pretrain") == "pretrain"]
            if not entries:
                have = sorted({e["size"] for e in zoo.entries(corpus=corpus)}, key=list(FAMILY).index)
                on = f" on corpus '{corpus}'" if corpus else ""
                raise ZooModelError(
                    f"the zoo at {root} has no size '{key}'{on} (it has {', '.join(have) or 'none'})",
                    where=where,
                    fix=_build_hint(key),
                )
            entry = entries[-1]  # most tokens seen (entries() sorts by params, then tokens)
        path = zoo.model_dir(entry["name"])
        if not (path / "config.json").is_file():
            raise ZooModelError(
                f"zoo model folder {path} is missing", where=where, fix=_build_hint(entry["size"])
            )
        return ModelRef(ref, path, entry["size"], int(entry["non_embedding_params"]), entry["name"])
    return _resolve_path(ref, role)


def _resolve_path(ref: str, role: str) -> ModelRef:
    from transformers import AutoConfig, AutoModelForCausalLM

    from transferlab.models.hf_causal import ModelLoadError, check_folder
    from transferlab.zoo.model import count_non_embedding

    p = Path(ref).expanduser()
    if not p.exists():
        raise ZooModelError(
            f"model path '{ref}' does not exist",
            where=f"{role}_model",
            fix="pass zoo:<size> (see `transferlab zoo ls`) or a local Hugging Face causal-LM folder",
        )
    try:
        check_folder(p, role)
        config = AutoConfig.from_pretrained(p, local_files_only=True, trust_remote_code=False)
    except ModelLoadError as err:
        raise ZooModelError(err.what, where=f"{role}_model", fix=err.fix) from None
    except (OSError, ValueError, KeyError) as err:
        raise ZooModelError(
            f"config at '{p}' cannot be read ({str(err).splitlines()[0][:160]})",
            where=f"{role}_model",
            fix="pass a folder written by save_pretrained",
        ) from None
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if getattr(config, "model_type", None) not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ZooModelError(
            f"'{ref}' is a '{getattr(config, 'model_type', '?')}' model, not a causal language model",
            where=f"{role}_model",
            fix="pass a decoder-only LM folder (llama, gpt2, qwen2, ...) or zoo:<size>",
        )
    with torch.device("meta"):  # parameter count without allocating the weights
        n = count_non_embedding(AutoModelForCausalLM.from_config(config))
    label = p.resolve().name
    if label in ("weak", "strong"):  # those names are the study's own view keys
        label = f"model-{label}"
    return ModelRef(ref, p.resolve(), label, int(n))


def resolve_models(cfg: W2SConfig, store: Store | None) -> list[ModelRef]:
    """The ladder weak, mid_models..., strong; refuses a missing side or a weak larger than the strong."""
    if not cfg.weak.model or not cfg.strong.model:
        missing = "strong_model" if cfg.weak.model else "weak_model"
        raise ZooModelError(
            f"{missing} is not set; the zoo/causal-LM feature backend needs both",
            where="W2SConfig",
            fix="--set weak_model=zoo:xs --set strong_model=zoo:m (or local causal-LM folders)",
        )
    root = zoo_root(cfg, store)
    weak = resolve_model(cfg.weak.model, root, cfg.zoo_corpus, role="weak")
    mids = [resolve_model(m, root, cfg.zoo_corpus, role="mid") for m in cfg.strong.mid_models]
    strong = resolve_model(cfg.strong.model, root, cfg.zoo_corpus, role="strong")
    ladder = [weak, *sorted(mids, key=lambda r: r.non_embedding_params), strong]
    labels = [r.label for r in ladder]
    if len(set(labels)) != len(labels):
        raise ZooModelError(
            f"the weak/mid/strong models repeat a view name ({', '.join(labels)})",
            where="W2SConfig",
            fix="give each rung a different model",
        )
    if weak.non_embedding_params > strong.non_embedding_params:
        raise ZooModelError(
            f"the weak model {weak.label} ({weak.non_embedding_params:,} non-embedding params) is larger "
            f"than the strong model {strong.label} ({strong.non_embedding_params:,})",
            where="W2SConfig",
            fix="swap weak_model and strong_model",
        )
    for m in mids:
        if not weak.non_embedding_params <= m.non_embedding_params <= strong.non_embedding_params:
            raise ZooModelError(
                f"mid model {m.label} ({m.non_embedding_params:,} params) is not between the weak and "
                "strong models",
                where="mid_models",
                fix="list only models whose size lies between weak_model and strong_model",
            )
    return ladder


def with_resolved_models(cfg: W2SConfig, store: Store | None) -> W2SConfig:
    """``cfg`` with ``resolved_models`` filled in, so every cache (run, floor/ceiling) keys on the weights."""
    ladder = resolve_models(cfg, store)
    return cfg.model_copy(update={"resolved_models": {r.label: r.identity() for r in ladder}})


# --------------------------------------------------------------------------- features
def _batch_order(tok: Any, texts: list[str], max_length: int) -> list[int]:
    lengths = [len(ids) for ids in tok(texts, truncation=True, max_length=max_length)["input_ids"]]
    return sorted(range(len(texts)), key=lambda i: (lengths[i], i))


@torch.no_grad()
def causal_features(
    texts: list[str], path: str | Path, max_length: int = 128, batch_size: int = 32, device: str = "cpu"
) -> torch.Tensor:
    """(n, H) float32: each text's last hidden state mean-pooled over its attention mask.

    Batches are length-sorted and padded on the right (the model's positions start at 0 for every
    text; the pads come after every real token, so a causal model's real positions never see them).
    """
    from transferlab.core.devices import resolve_device
    from transferlab.models.hf_causal import context_length, load_causal_lm, load_tokenizer
    from transferlab.models.hf_classifier import mean_pool

    dev = resolve_device(device, where="device")
    model = load_causal_lm(path).to(dev)
    tok = load_tokenizer(path, role="feature")
    tok.padding_side = "right"
    if tok.pad_token_id is None:
        tok.pad_token = tok.unk_token or tok.convert_ids_to_tokens(0)
    ctx = context_length(model)
    max_len = min(max_length, ctx) if ctx else max_length
    base = model.get_decoder() if hasattr(model, "get_decoder") else model
    order = _batch_order(tok, texts, max_len)
    out = torch.empty(len(texts), int(model.config.get_text_config().hidden_size))
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        enc = tok(
            [texts[j] for j in idx], padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        )
        ids, mask = enc["input_ids"], enc["attention_mask"]
        empty = mask.sum(1) == 0
        if bool(empty.any()):  # an empty text is read as one pad token, so its mean is defined
            if ids.shape[1] == 0:
                ids = torch.full((len(idx), 1), int(tok.pad_token_id), dtype=torch.long)
                mask = torch.zeros_like(ids)
            ids[empty, 0] = int(tok.pad_token_id)
            mask[empty, 0] = 1
        hidden = base(input_ids=ids.to(dev), attention_mask=mask.to(dev)).last_hidden_state
        out[torch.tensor(idx)] = mean_pool(hidden.float(), mask.to(dev)).cpu()
    return out


def cached_features(
    data: ClassificationData, model: ModelRef, cfg: W2SConfig, store: Store | None, batch_size: int = 32
) -> torch.Tensor:
    """(n, H) features of ``data.texts`` by ``model``, from the store when this pass was made before."""
    assert data.texts is not None
    text_sha = hashlib.sha256(json.dumps(data.texts).encode()).hexdigest()
    ident = {
        "texts": text_sha,
        "n": data.n,
        "max_length": cfg.strong.max_length,
        "pooling": POOLING,
        **{k: v for k, v in model.identity().items() if k not in ("ref", "label")},
    }
    if store is None:
        return causal_features(data.texts, model.path, cfg.strong.max_length, batch_size, cfg.device)
    run = store.open_run(FEATURES_STUDY, FeatureCacheConfig(identity=ident))
    path = Path(run.path) / FEATURES_FILE
    if run.status == "done" and path.is_file():
        return load_file(str(path))[FEATURE_KEY][:, 0]
    run.start()
    feats = causal_features(data.texts, model.path, cfg.strong.max_length, batch_size, cfg.device)
    save_file({FEATURE_KEY: feats.unsqueeze(1).contiguous()}, str(path))
    run.finish({"shape": list(feats.shape), **ident})
    return feats


def require_texts(cfg: W2SConfig, data: ClassificationData) -> None:
    if data.texts is None:
        raise ZooModelError(
            f"task '{cfg.task.name}' has no texts, so weak_model/strong_model have nothing to embed",
            where="weak_model/strong_model",
            fix="use a text task (stdlib-kind, stdlib-raises, stdlib-package, a text CSV/JSONL) "
            "or unset weak_model and strong_model",
        )


def zoo_refs_to_paths(cfg: W2SConfig, store: Store | None) -> W2SConfig:
    """Finetune backend: ``zoo:<size>`` references replaced by the zoo models' folders."""
    update = {}
    for key in ("weak_model", "strong_model"):
        ref = cfg.value(key)
        if ref and ref.startswith(ZOO_PREFIX):
            update[key] = str(resolve_model(ref, zoo_root(cfg, store), cfg.zoo_corpus, role=key[:-6]).path)
    return cfg.updated(**update) if update else cfg


def build_model_views(cfg: W2SConfig, store: Store | None, data: ClassificationData) -> ModelViews:
    """Views weak / mids / strong from causal-LM features; ``sizes`` are non-embedding parameter counts."""
    require_texts(cfg, data)
    ladder = resolve_models(cfg, store)
    views: dict[str, torch.Tensor] = {}
    for r in ladder:
        views[r.label] = cached_features(data, r, cfg, store)
    views["weak"] = views[ladder[0].label]
    views["strong"] = views[ladder[-1].label]
    return ModelViews(
        data,
        views,
        [r.label for r in ladder],
        {r.label: float(r.non_embedding_params) for r in ladder},
        {r.label: r.identity() for r in ladder},
    )


# --------------------------------------------------------------------------- sweep
