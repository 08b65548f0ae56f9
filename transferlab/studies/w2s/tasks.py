"""Task -> feature views for the frozen-feature backend, with the text embedding pass cached in the store.

A view is a feature matrix the head backend trains on: ``strong`` (the student's and the
ceiling's features), ``weak`` (the supervisor's), and an ordered ``ladder`` of views from weakest
to strongest (for bootstrapping and for PGR against the size gap). Text tasks get their views
from an encoder truncated after each layer: layer ``weak_layer`` is the weak model, the last
layer the strong one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from transferlab.core.config import StudyConfig
from transferlab.core.errors import ConfigError
from transferlab.data.classification import TASKS, ClassificationData, is_user_file, load_task
from transferlab.store.run import Store
from transferlab.studies.w2s.config import FEATURES_STUDY, ICL_TASK, W2SConfig

FEATURES_FILE = "features.safetensors"


@dataclass
class Views:
    data: ClassificationData
    views: dict[str, torch.Tensor]
    ladder: list[str]
    sizes: dict[str, float] = field(default_factory=dict)  # a size measure per ladder view (layers, rung)

    @property
    def strong(self) -> torch.Tensor:
        return self.views["strong"]

    @property
    def weak(self) -> torch.Tensor:
        return self.views["weak"]


class FeatureCacheConfig(StudyConfig):
    """Identity of one embedding pass (what was embedded, by which encoder)."""

    identity: dict[str, Any]


def build_data(cfg: W2SConfig) -> ClassificationData:
    if cfg.task.name == ICL_TASK:  # the miniature's own draw (studies/w2s/icl_trainer.py)
        from transferlab.studies.w2s.icl_trainer import concept_data

        return concept_data(cfg)[0]
    kwargs: dict[str, Any] = {}
    if is_user_file(cfg.task.name):
        kwargs["classes"] = cfg.task.classes
        if cfg.task.name.startswith("hf:"):
            kwargs["seed"] = cfg.task.seed  # sciq's and anthropic_hh's seeded draws
        if cfg.weak.noise is not None:
            kwargs["noise"] = cfg.weak.noise
        return load_task(cfg.task.name, **kwargs)
    spec = TASKS.get(cfg.task.name)
    if spec is None:
        return load_task(cfg.task.name)  # raises the clear unknown-task error
    kwargs["seed"] = cfg.task.seed
    if spec.kind == "synthetic":
        kwargs["n"] = cfg.task.n_examples or 4000
        if cfg.weak.noise is not None and cfg.task.name == "synthetic-noisy":
            kwargs["noise"] = cfg.weak.noise
    elif spec.kind == "tabular" and cfg.weak.noise is not None:
        kwargs["noise"] = cfg.weak.noise
    return load_task(cfg.task.name, **kwargs)


def encoder_identity(encoder: str) -> dict[str, str]:
    from transferlab.models.hf_classifier import MINILM_SHA256, resolve_model_path

    if encoder == "minilm":
        return {"encoder": "all-MiniLM-L6-v2", "sha256": MINILM_SHA256}
    folder = resolve_model_path(encoder)
    blob = (folder / "config.json").read_bytes()
    weights = sorted(
        p.name + str(p.stat().st_size) + str(int(p.stat().st_mtime)) for p in folder.glob("*.safetensors")
    )
    return {
        "encoder": str(folder.resolve()),
        "config_sha": hashlib.sha256(blob).hexdigest(),
        "weights": ";".join(weights),
    }


def text_layers(data: ClassificationData, cfg: W2SConfig, store: Store | None) -> torch.Tensor:
    """(n, L + 1, H) mean-pooled hidden states per layer, cached in the store as safetensors."""
    from transferlab.models.hf_classifier import encode_layers

    assert data.texts is not None
    text_sha = hashlib.sha256(json.dumps(data.texts).encode()).hexdigest()
    ident = {"texts": text_sha, "n": data.n, "max_length": cfg.strong.max_length,
             **encoder_identity(cfg.strong.encoder)}
    if store is None:
        return encode_layers(data.texts, cfg.strong.encoder, cfg.strong.max_length)
    run = store.open_run(FEATURES_STUDY, FeatureCacheConfig(identity=ident))
    path = Path(run.path) / FEATURES_FILE
    if run.status == "done" and path.is_file():
        return load_file(str(path))["layers"]
    run.start()
    layers = encode_layers(data.texts, cfg.strong.encoder, cfg.strong.max_length)
    save_file({"layers": layers.contiguous()}, str(path))
    run.finish({"shape": list(layers.shape), **ident})
    return layers


def build_views(cfg: W2SConfig, store: Store | None, data: ClassificationData | None = None) -> Views:
    data = data if data is not None else build_data(cfg)
    if data.texts is None:
        views = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in data.views.items()}
        sizes = {name: float(i) for i, name in enumerate(data.ladder)}
        return Views(data, views, list(data.ladder), sizes)
    layers = text_layers(data, cfg, store)
    n_layers = layers.shape[1] - 1
    if cfg.weak.layer >= n_layers:
        raise ConfigError(
            f"weak_layer={cfg.weak.layer} but the encoder has only {n_layers} layers",
            where="weak_layer",
            fix=f"use a weak_layer below {n_layers} (the strong model is layer {n_layers})",
        )
    views = {f"layer{i}": layers[:, i] for i in range(cfg.weak.layer, n_layers + 1)}
    views["weak"] = layers[:, cfg.weak.layer]
    views["strong"] = layers[:, n_layers]
    ladder = [f"layer{i}" for i in range(cfg.weak.layer, n_layers + 1)]
    return Views(data, views, ladder, {f"layer{i}": float(i) for i in range(cfg.weak.layer, n_layers + 1)})
