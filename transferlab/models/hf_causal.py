"""Load Hugging Face causal LMs and tokenizers from local folders, with one-line errors.

Weights are read from safetensors only (``use_safetensors=True``), nothing is downloaded and no
remote code runs. The helpers here are shared by every study that combines several causal LMs
(emulated fine-tuning, the model zoo): loading, the shared vocabulary check and the context length.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from transferlab.core.errors import TransferlabError


class ModelLoadError(TransferlabError):
    """A model or tokenizer folder is missing or is not what was asked for."""


class VocabMismatchError(ModelLoadError):
    """Models that must share one tokenizer do not."""


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in _DTYPES:
        raise ModelLoadError(
            f"unknown dtype '{name}'", where="--dtype", fix=f"use one of {', '.join(_DTYPES)}"
        )
    return _DTYPES[name]


def check_folder(path: str | Path, role: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelLoadError(
            f"{role} model path '{p}' does not exist",
            fix="pass a local folder written by save_pretrained (config.json + model.safetensors)",
        )
    if not p.is_dir() or not (p / "config.json").is_file():
        raise ModelLoadError(
            f"{role} model path '{p}' is not a Hugging Face model folder (no config.json)",
            fix="pass a folder written by save_pretrained",
        )
    return p


def load_causal_lm(
    path: str | Path, *, role: str = "model", dtype: str | torch.dtype = "float32", device: str = "cpu"
) -> Any:
    """A causal LM from a local save_pretrained folder, in eval mode, on ``device``."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    p = check_folder(path, role)
    torch_dtype = parse_dtype(dtype)
    try:
        config = AutoConfig.from_pretrained(p, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(
            f"{role} model config at '{p}' cannot be read ({str(err).splitlines()[0][:160]})",
            fix="pass a folder written by save_pretrained with a known model_type",
        ) from None
    model_type = getattr(config, "model_type", "?")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelLoadError(
            f"{role} model at '{p}' is a '{model_type}' model, not a causal language model",
            fix="pass a decoder-only LM (e.g. llama, gpt2, qwen2, mistral)",
        )
    if not any(p.glob("*.safetensors")):
        raise ModelLoadError(
            f"{role} model at '{p}' has no .safetensors weights",
            fix="re-save it with save_pretrained(path, safe_serialization=True) (pickles are not loaded)",
        )
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # stderr stays one line per error, stdout stays JSON
    try:
        model = AutoModelForCausalLM.from_pretrained(
            p, local_files_only=True, use_safetensors=True, trust_remote_code=False, dtype=torch_dtype
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelLoadError(
            f"{role} model at '{p}' cannot be loaded ({str(err).splitlines()[0][:160]})",
            fix="check that the folder is complete (config.json and every weight shard)",
        ) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return model.to(device).eval()


def has_tokenizer(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and any((p / f).is_file() for f in _TOKENIZER_FILES)


def load_tokenizer(path: str | Path, *, role: str = "base") -> Any:
    """The tokenizer saved next to a model (or in its own folder), with a pad token set."""
    from transformers import AutoTokenizer

    p = Path(path).expanduser()
    if not p.exists():
        raise ModelLoadError(f"{role} tokenizer path '{p}' does not exist", fix="pass a local folder")
    if not has_tokenizer(p):
        raise ModelLoadError(
            f"no tokenizer files in {role} folder '{p}'",
            fix="save the tokenizer there with tokenizer.save_pretrained, or pass --tokenizer PATH",
        )
    try:
        tok = AutoTokenizer.from_pretrained(p, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(
            f"tokenizer at '{p}' cannot be loaded ({str(err).splitlines()[0][:160]})",
            fix="re-save it with tokenizer.save_pretrained",
        ) from None
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token
    return tok


def output_width(model: Any) -> int:
    """How many logits the model emits per position."""
    head = model.get_output_embeddings()
    if head is not None and hasattr(head, "weight"):
        return int(head.weight.shape[0])
    return int(model.config.get_text_config().vocab_size)


def context_length(model: Any) -> int | None:
    """The longest sequence the model was built for, or None where the config does not say."""
    cfg = model.config.get_text_config()
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def shared_vocab_size(
    models: Mapping[str, Any], tokenizer: Any, tokenizers: Mapping[str, Any] | None = None
) -> int:
    """The logit width every model shares, after checking they use one vocabulary.

    ``models`` maps a role ('base', 'ft', ...) to a model; ``tokenizers`` maps a role to the
    tokenizer found next to that model (roles without one are skipped). Models of one family may
    pad their embedding matrices differently; then the shared width is the smallest one, which
    must still cover every token of ``tokenizer``.
    """
    ref_vocab = tokenizer.get_vocab()
    for role, tok in (tokenizers or {}).items():
        if tok is None:
            continue
        vocab = tok.get_vocab()
        if vocab != ref_vocab:
            differing = next((t for t, i in vocab.items() if ref_vocab.get(t) != i), None)
            raise VocabMismatchError(
                f"the {role} model's tokenizer has a different vocabulary from the base tokenizer "
                f"({len(vocab)} vs {len(ref_vocab)} tokens; first difference at token {differing!r})",
                where=role,
                fix="emulated fine-tuning needs models that share one tokenizer: use models of one family",
            )
    widths = {role: output_width(m) for role, m in models.items()}
    n_tok = len(tokenizer)
    small_role = min(widths, key=widths.get)
    if widths[small_role] < n_tok:
        raise VocabMismatchError(
            f"the {small_role} model emits {widths[small_role]} logits but the tokenizer has {n_tok} tokens",
            where=small_role,
            fix="the models and the tokenizer must share one vocabulary: use models of one family",
        )
    return widths[small_role]
