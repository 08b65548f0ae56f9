"""Tiny random-weight causal LMs and a word-level tokenizer for the EFT tests (built offline).

Other tests/test_eft_*.py files import the builders from here; the tests in this file check the
builders themselves and the loading errors of transferlab.models.hf_causal.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

WORDS = (
    "the cat dog sat on a mat ran to big small red blue and then it was very good bad "
    "one two three four five six seven eight nine zero code prose"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]


def make_tokenizer(words: list[str] | None = None):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + list(words or WORDS))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]"
    )


def make_model(
    hidden: int = 32,
    layers: int = 2,
    seed: int = 0,
    vocab: int | None = None,
    ctx: int = 64,
    init: float = 0.4,
):
    """A tiny Llama with sharp random logits (large init keeps argmax ties far apart)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab or len(SPECIAL) + len(WORDS),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=ctx,
        initializer_range=init,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def save(model, tokenizer, path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def build_trio(root: Path) -> dict[str, Path]:
    """Paths of base (bigger), ft and ref (small) tiny models sharing one tokenizer."""
    tok = make_tokenizer()
    return {
        "base": save(make_model(hidden=48, layers=3, seed=0), tok, root / "base"),
        "ft": save(make_model(seed=2), tok, root / "ft"),
        "ref": save(make_model(seed=1), tok, root / "ref"),
        "root": root,
    }


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    return build_trio(tmp_path_factory.mktemp("eft_models"))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and do not fight the other jobs on a shared CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_missing_path_is_one_clear_line(tmp_path):
    from transferlab.models.hf_causal import ModelLoadError, load_causal_lm

    with pytest.raises(ModelLoadError) as err:
        load_causal_lm(tmp_path / "nope", role="ft")
    msg = err.value.one_line()
    assert "ft model path" in msg and "does not exist" in msg and "save_pretrained" in msg and "\n" not in msg


def test_not_a_causal_lm_and_pickled_weights_are_refused(tmp_path):
    from transformers import DistilBertConfig

    from transferlab.models.hf_causal import ModelLoadError, load_causal_lm

    enc = DistilBertConfig(vocab_size=40, dim=16, n_layers=1, n_heads=2, hidden_dim=32)
    enc.save_pretrained(tmp_path / "enc")
    with pytest.raises(ModelLoadError, match="'distilbert' model, not a causal language model"):
        load_causal_lm(tmp_path / "enc", role="base")
    make_model().config.save_pretrained(tmp_path / "nosafe")  # a config but no safetensors weights
    with pytest.raises(ModelLoadError, match="no .safetensors weights"):
        load_causal_lm(tmp_path / "nosafe")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_causal_lm(tmp_path / "empty")


def test_loaded_model_matches_the_saved_one(trio):
    from transferlab.models.hf_causal import context_length, load_causal_lm, output_width

    model = load_causal_lm(trio["ft"], role="ft")
    fresh = make_model(seed=2)
    ids = torch.tensor([[2, 5, 7, 9]])
    with torch.inference_mode():
        assert torch.allclose(model(ids).logits, fresh(ids).logits, atol=1e-6)
    assert output_width(model) == len(SPECIAL) + len(WORDS)
    assert context_length(model) == 64


def test_shared_vocab_size_refuses_different_vocabularies():
    from transferlab.models.hf_causal import VocabMismatchError, shared_vocab_size

    tok = make_tokenizer()
    other = make_tokenizer(list(reversed(WORDS)))
    base, ft = make_model(), make_model(seed=3)
    assert shared_vocab_size({"base": base, "ft": ft}, tok, {"ft": tok}) == len(tok)
    with pytest.raises(VocabMismatchError, match="ft model's tokenizer has a different vocabulary"):
        shared_vocab_size({"base": base, "ft": ft}, tok, {"ft": other})
    small = make_model(vocab=20)
    with pytest.raises(VocabMismatchError, match="ref model emits 20 logits but the tokenizer has 36"):
        shared_vocab_size({"base": base, "ref": small}, tok)
    padded = make_model(vocab=48)  # one family, embedding matrix padded: the shared width is the smaller
    assert shared_vocab_size({"base": padded, "ft": ft}, tok) == 36
