"""Zoo training throughput: tokens/s per size through the project's engine, fp32 and bf16 side by side,
each against the same-dtype matmul peak measured in the same script.

    python bench/zoo_throughput.py [--sizes xxs,xs,s,m,l,xl] [--steps 12] [--threads 2] [--json OUT]
                                   [--baseline] [--compiled]

Each size trains with the zoo's own settings (seq_len 128, batch 32, vocab 4096) as the ``full`` build does.
Rows: ``zoo-fp32`` and ``zoo-bf16`` (the zoo's :class:`~transferlab.zoo.model.ZooLM`, float32 or bf16
autocast); with ``--baseline`` also ``hf-fp32``, the previous path (Hugging Face's ``LlamaForCausalLM`` in
float32, as the zoo trained before v2), so the speed-up is measured in the same run.

FLOPs per token = 6 x (non-embedding params + tied LM head V x d) + 6 x n_layers x seq_len x d (Kaplan et
al. 2020). The peak is the best of several 2048^3 matmuls in that dtype, same process and threads. Token ids
are random (speed does not depend on the text).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from transferlab.core import progress
from transferlab.train import transforms as T
from transferlab.train.engine import Engine, Schedule, TrainData
from transferlab.train.ensemble import StackedForward
from transferlab.train.lm import CausalLMLogits, LMCrossEntropy
from transferlab.zoo.model import flops_per_token, hf_config, new_lm
from transferlab.zoo.sizes import parse_sizes
from transferlab.zoo.train import shape_of


def matmul_flops(dtype: torch.dtype, n: int = 2048, reps: int = 7) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def engine_tokens_per_s(kind: str, size: str, steps: int, seq_len: int, batch: int, vocab: int) -> float:
    shape = shape_of(size, vocab, seq_len)
    if kind == "hf-fp32":
        from transformers import LlamaForCausalLM

        torch.manual_seed(0)
        model, dtype = LlamaForCausalLM(hf_config(shape, 0)), torch.float32
    else:
        model, dtype = new_lm(shape, 0), (torch.bfloat16 if "bf16" in kind else torch.float32)
    compile = kind.endswith("-compiled")
    wrapper = CausalLMLogits(model, dtype)
    params = {n: p.detach().clone().unsqueeze(0) for n, p in wrapper.named_parameters()}
    w = torch.randint(0, vocab, (batch * (steps + 2), seq_len + 1))
    data = TrainData(w, w, w[:1], w[:1])
    chain = T.chain(
        T.ScaleByAdam(0.9, 0.95),
        T.AddDecayedWeights(torch.tensor([0.01])),
        T.ScaleByLR(torch.tensor([1e-3]), T.make_schedule("cosine", 2, steps)),
    )
    # two untimed warm-up steps (for the compiled kinds: the compilation), then the timed ones
    forward, loss = StackedForward(wrapper), LMCrossEntropy()
    warm = Engine(forward, params, loss, chain, data,
                  Schedule(steps=2, batch_size=batch, eval_every=10**9, checkpoint_every=10**9),
                  evaluator=lambda p, f, s: [{"step": s}], description="warm-up", compile=compile)
    warm.run()
    # the warm-up's compiled step, reused: not compiled again
    eng = Engine(forward, params, loss, chain, data,
                 Schedule(steps=steps, batch_size=batch, eval_every=10**9, checkpoint_every=10**9),
                 evaluator=lambda p, f, s: [{"step": s}], description=f"bench {size}",
                 compile=warm.compiled_loss or False)
    res = eng.run()
    return res.steps_run * batch * seq_len / res.train_seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="xxs,xs,s,m,l,xl")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--baseline", action="store_true", help="also time the pre-v2 path (HF Llama, fp32)")
    ap.add_argument("--compiled", action="store_true", help="also time the zoo through torch.compile")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    progress.set_quiet(True)
    load = os.getloadavg()[0]
    peaks = {"fp32": matmul_flops(torch.float32), "bf16": matmul_flops(torch.bfloat16)}
    kinds = (["hf-fp32"] if args.baseline else []) + ["zoo-fp32", "zoo-bf16"]
    if args.compiled:
        kinds += ["zoo-fp32-compiled", "zoo-bf16-compiled"]
    rows = []
    for size in parse_sizes(args.sizes):
        shape = shape_of(size, args.vocab, args.seq_len)
        fpt = flops_per_token(shape)
        for kind in kinds:
            tps = engine_tokens_per_s(kind, size, args.steps, args.seq_len, args.batch, args.vocab)
            peak = peaks["bf16" if "bf16" in kind else "fp32"]
            rows.append({"size": size, "kind": kind, "tokens_per_s": tps, "flops_per_token": fpt,
                         "achieved_gflops": tps * fpt / 1e9, "fraction_of_same_dtype_peak": tps * fpt / peak})
            print(f"{size:4s} {kind:17s} {tps:>10,.0f} tok/s {tps * fpt / 1e9:>7.1f} GFLOP/s "
                  f"{100 * tps * fpt / peak:>5.1f}% of {'bf16' if 'bf16' in kind else 'fp32'} peak", flush=True)
    by = {(r["size"], r["kind"]): r["tokens_per_s"] for r in rows}
    speedups = {f"{s} {k}": by[(s, k)] / by[(s, "hf-fp32")] for s in parse_sizes(args.sizes)
                for k in ("zoo-bf16", "zoo-bf16-compiled") if (s, "hf-fp32") in by and (s, k) in by}
    peaks_after = {"fp32": matmul_flops(torch.float32), "bf16": matmul_flops(torch.bfloat16)}
    out = {"threads": args.threads, "seq_len": args.seq_len, "batch": args.batch, "vocab": args.vocab,
           "steps": args.steps, "load_average_before": load, "load_average_after": os.getloadavg()[0],
           "matmul_gflops": {k: v / 1e9 for k, v in peaks.items()},
           "matmul_gflops_after": {k: v / 1e9 for k, v in peaks_after.items()},
           "rows": rows, "bf16_speedup_over_hf_fp32": speedups}
    print(f"matmul peak 2048^3 ({args.threads} threads): fp32 {peaks['fp32'] / 1e9:.1f}, bf16 "
          f"{peaks['bf16'] / 1e9:.1f} GFLOP/s (after: {peaks_after['fp32'] / 1e9:.1f}, "
          f"{peaks_after['bf16'] / 1e9:.1f}); load {load:.2f} -> {out['load_average_after']:.2f}")
    for s, x in speedups.items():
        print(f"{s} / hf-fp32 = {x:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
