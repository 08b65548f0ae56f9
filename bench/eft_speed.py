"""EFT decoding speed, side by side in one process (random weights; timing only).

    python bench/eft_speed.py [--tokens 64] [--reps 5] [--threads 1] [--low-acceptance]

Models: a 105M-parameter Llama (32 layers, hidden 512, vocab 8000, tied embeddings) as the base,
and 10.4M-parameter ones (2 layers, same width) as ft and ref (1/10 of the base). The base is a
"near-copy" of ref: its first two layers are ref's, the other 30 add a tiny residual, and ft is ref
plus small noise, so ft drafts are often accepted. Modes, interleaved in every repetition:

  base      the base model alone (transformers generate, greedy)
  eft       plain EFT (our generator, greedy, diagnostics on)
  eft-hf    EFT through EFTLogitsProcessor in base.generate (greedy)
  spec-K    speculative EFT, adaptive draft length up to K (the default; greedy; token-for-token equal to eft)
  fixed-K   speculative EFT with a fixed draft block of K (adaptive=False)

--low-acceptance makes the base an unrelated random model (not a near-copy of ref), so the EFT
mix follows the base and ft's drafts are almost never accepted (acceptance ~ 0): the case where
speculation can only cost.

Prints medians of tokens/s and the per-repetition ratios eft/base and spec/eft (their medians).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from transferlab.eft import EFT

VOCAB = 8000


def tokenizer():
    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3, **{f"w{i}": i + 4 for i in range(VOCAB - 4)}}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]"
    )


def llama(layers: int, seed: int) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=1024,
        initializer_range=0.1,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=None,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def build(low_acceptance: bool = False) -> tuple[LlamaForCausalLM, LlamaForCausalLM, LlamaForCausalLM]:
    ref = llama(2, seed=1)
    ft = llama(2, seed=1)
    big = llama(32, seed=3)
    if low_acceptance:
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            for p in ft.parameters():
                p.add_(0.004 * torch.randn(p.shape, generator=g))
        return big, ft, ref
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in ft.parameters():
            p.add_(0.004 * torch.randn(p.shape, generator=g))
        sd = {k: v for k, v in ref.state_dict().items() if not k.startswith("model.layers.")}
        sd.update(
            {
                k: v
                for k, v in ref.state_dict().items()
                if k.startswith(("model.layers.0.", "model.layers.1."))
            }
        )
        big.load_state_dict(sd, strict=False)
        for layer in big.model.layers[2:]:
            layer.self_attn.o_proj.weight.mul_(0.02)
            layer.mlp.down_proj.weight.mul_(0.02)
    return big, ft, ref


def n_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--blocks", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--low-acceptance", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tok = tokenizer()
    big, ft, ref = build(args.low_acceptance)
    print(
        f"base {n_params(big) / 1e6:.1f}M params, ft/ref {n_params(ft) / 1e6:.1f}M each "
        f"(ratio 1/{n_params(big) / n_params(ft):.1f}); threads={args.threads}; "
        f"{args.tokens} new tokens, batch 1"
    )
    eft = EFT(big, [(ft, ref, 1.0)], tok, beta=1.0)
    prompt = " ".join(f"w{i}" for i in range(10, 26))
    enc = tok(prompt, return_tensors="pt")
    n = args.tokens

    def base_alone():
        out = big.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        return out.shape[1] - enc["input_ids"].shape[1], out[0, enc["input_ids"].shape[1] :].tolist()

    def eft_plain():
        g = eft.generate(prompt, max_new_tokens=n, greedy=True).generations[0]
        return len(g.token_ids), g.token_ids

    def eft_hf():
        proc = eft.logits_processor()
        out = big.generate(
            **enc,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
            logits_processor=[proc],
        )
        return out.shape[1] - enc["input_ids"].shape[1], out[0, enc["input_ids"].shape[1] :].tolist()

    modes = {"base": base_alone, "eft": eft_plain, "eft-hf": eft_hf}
    accept: dict[str, list[float]] = {}
    for k in args.blocks:
        for name, adaptive in ((f"spec-{k}", True), (f"fixed-{k}", False)):

            def spec(k=k, name=name, adaptive=adaptive):
                res = eft.generate(prompt, max_new_tokens=n, greedy=True, speculative=k, adaptive=adaptive)
                accept.setdefault(name, []).append(res.stats["acceptance_rate"] or 0.0)
                return len(res.generations[0].token_ids), res.generations[0].token_ids

            modes[name] = spec
    for fn in modes.values():  # warm up
        fn()
    rates: dict[str, list[float]] = {m: [] for m in modes}
    tokens: dict[str, list[int]] = {}
    for _ in range(args.reps):
        for name, fn in modes.items():
            t0 = time.perf_counter()
            count, ids = fn()
            rates[name].append(count / (time.perf_counter() - t0))
            tokens[name] = ids
    for name, r in rates.items():
        extra = f"  acceptance {statistics.median(accept[name]):.2f}" if name in accept else ""
        print(
            f"{name:9s} median {statistics.median(r):7.2f} tok/s   "
            f"all: {', '.join(f'{x:.1f}' for x in r)}{extra}"
        )
    ratio = [e / b for e, b in zip(rates["eft"], rates["base"])]
    ratio_hf = [e / b for e, b in zip(rates["eft-hf"], rates["base"])]
    print(f"eft / base     median {statistics.median(ratio):.3f} (target >= 0.8)")
    print(f"eft-hf / base  median {statistics.median(ratio_hf):.3f}")
    for k in args.blocks:
        for name in (f"spec-{k}", f"fixed-{k}"):
            sp = [s / e for s, e in zip(rates[name], rates["eft"])]
            print(
                f"{name} / eft  median {statistics.median(sp):.3f}; "
                f"same tokens as eft: {tokens[name] == tokens['eft']}"
            )
    print(f"eft-hf same tokens as eft: {tokens['eft-hf'] == tokens['eft']}")


if __name__ == "__main__":
    main()
