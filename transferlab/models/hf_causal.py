"""Load Hugging Face causal LMs and tokenizers from local folders, with one-line errors.

Weights are read from safetensors only (``use_safetensors=True``), nothing is downloaded and no
remote code runs. The helpers here are shared by every study that combines several causal LMs
(emulated fine-tuning, the model zoo): loading, the shared vocabulary check and the context length.

Placement and precision are optional settings of :func:`load_causal_lm`: ``device`` (``auto`` takes
CUDA when torch sees it), ``device_map`` (accelerate's dispatch: ``auto``, ``balanced``,
``sequential`` or a module -> device dict; the model is then not moved as a whole), ``dtype``
(``auto`` keeps the checkpoint's), ``attn_implementation`` (``eager``, ``sdpa``,
``flash_attention_2``) and ``quantization`` (``8bit`` / ``4bit`` through bitsandbytes, which must
be installed and needs a CUDA GPU). Each is checked before anything heavy is read.
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
QUANTIZATIONS = ("8bit", "4bit")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")


def parse_dtype(name: str | torch.dtype) -> torch.dtype | str:
    """A torch dtype from its name; ``auto`` (the checkpoint's own dtype) is passed through."""
    if isinstance(name, torch.dtype) or name == "auto":
        return name
    if name not in _DTYPES:
        raise ModelLoadError(
            f"unknown dtype '{name}'", where="--dtype", fix=f"use one of {', '.join(_DTYPES)} or auto"
        )
    return _DTYPES[name]


def resolve_device(device: str | torch.device | None, role: str = "model") -> torch.device:
    """``auto`` -> cuda when torch sees a GPU, else mps, else cpu; a device torch lacks is one line
    (``core.devices.resolve_device``, the project's one resolver)."""
    from transferlab.core.devices import resolve_device as resolve

    return resolve(device, where="--device", role=role, auto_mps=True, error=ModelLoadError)


def _need(module: str, what: str, fix: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ModelLoadError(f"{what} needs the '{module}' package, which is not installed", fix=fix)


def load_options(
    *,
    role: str = "model",
    dtype: str | torch.dtype = "float32",
    device: str | torch.device | None = "cpu",
    device_map: str | Mapping[str, Any] | None = None,
    attn_implementation: str | None = None,
    quantization: str | None = None,
) -> tuple[dict[str, Any], torch.device | None]:
    """The ``from_pretrained`` keyword arguments for these settings, and the device to move the
    model to afterwards (None when accelerate places it). Raises one-line errors for bad settings."""
    kwargs: dict[str, Any] = {"dtype": parse_dtype(dtype)}
    if attn_implementation is not None:
        if attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ModelLoadError(
                f"unknown attention implementation '{attn_implementation}'",
                where="--attn-implementation",
                fix=f"use one of {', '.join(ATTN_IMPLEMENTATIONS)}",
            )
        if attn_implementation.startswith("flash_attention"):
            pkg = "flash_attn" if attn_implementation == "flash_attention_2" else "flash_attn_interface"
            _need(pkg, attn_implementation, "pip install flash-attn on a CUDA machine, or use sdpa")
        kwargs["attn_implementation"] = attn_implementation
    if quantization is not None:
        if quantization not in QUANTIZATIONS:
            raise ModelLoadError(
                f"unknown quantization '{quantization}'", where="--load-in", fix="use 8bit or 4bit"
            )
        _need("bitsandbytes", f"{quantization} loading",
              "pip install bitsandbytes (it needs a CUDA GPU), or drop --load-in")
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"{quantization} loading needs a CUDA GPU and torch sees none", where="--load-in",
                fix="drop --load-in (use --dtype bfloat16 to halve memory)",
            )
        from transformers import BitsAndBytesConfig

        compute = kwargs["dtype"] if isinstance(kwargs["dtype"], torch.dtype) else torch.bfloat16
        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_8bit=True)
            if quantization == "8bit"
            else BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute, bnb_4bit_quant_type="nf4")
        )
        if device_map is None:  # quantized weights cannot be moved after loading
            device_map = {"": str(resolve_device(device, role))}
    if device_map is not None:
        _need("accelerate", "device_map", "pip install accelerate, or pass --device instead of --device-map")
        if isinstance(device_map, str) and device_map not in ("auto", "balanced", "balanced_low_0", "sequential"):
            device_map = {"": str(resolve_device(device_map, role))}
        kwargs["device_map"] = device_map
        return kwargs, None
    return kwargs, resolve_device(device, role)


def check_folder(path: str | Path, role: str) -> Path:
    """The folder, if it exists and holds a config.json (one-line error otherwise)."""
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
    path: str | Path,
    *,
    role: str = "model",
    dtype: str | torch.dtype = "float32",
    device: str | torch.device | None = "cpu",
    device_map: str | Mapping[str, Any] | None = None,
    attn_implementation: str | None = None,
    quantization: str | None = None,
) -> Any:
    """A causal LM from a local save_pretrained folder, in eval mode, on ``device`` (or placed by
    ``device_map``); see the module docstring for the settings."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    p = check_folder(path, role)
    kwargs, move_to = load_options(
        role=role, dtype=dtype, device=device, device_map=device_map,
        attn_implementation=attn_implementation, quantization=quantization,
    )
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
            p, local_files_only=True, use_safetensors=True, trust_remote_code=False, **kwargs
        )
    except (OSError, ValueError, RuntimeError, ImportError) as err:
        raise ModelLoadError(
            f"{role} model at '{p}' cannot be loaded ({str(err).splitlines()[0][:160]})",
            fix="check that the folder is complete (config.json and every weight shard)",
        ) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if move_to is not None:
        model = model.to(move_to)
    return model.eval()


def input_device(model: Any) -> torch.device:
    """Where a model's input ids go: its input embedding's device (differs from the first
    parameter's under a device_map), else its first parameter's."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(emb, "weight", None)
    if isinstance(weight, torch.Tensor):
        return weight.device
    return next(model.parameters()).device




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
