"""Zoo training throughput on CPU: tokens/s per size through the project's engine, and the fraction of
the machine's fp32 matmul FLOP/s that it reaches.

    python bench/zoo_throughput.py [--sizes xxs,xs,s,m,l] [--steps 20] [--seq-len 128] \
        [--batch 16] [--threads 2]

FLOPs per token = 6 x (non-embedding params + tied LM head V x d) + 6 x n_layers x seq_len x d (attention),
as in Kaplan et al. 2020. The machine's FLOP/s is the best of several 2048 x 2048 fp32 matmuls in the
same process and thread setting. Token ids are random (speed does not depend on the text).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from transferlab.core import progress
from transferlab.models.zoo import FAMILY, new_model, parse_sizes
from transferlab.train import transforms as T
from transferlab.train.engine import Engine, Schedule, TrainData
from transferlab.train.ensemble import StackedForward
from transferlab.train.lm import CausalLMLogits, LMCrossEntropy, flops_per_token


def matmul_flops(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def engine_tokens_per_s(size: str, steps: int, seq_len: int, batch: int, vocab: int) -> float:
    model = CausalLMLogits(new_model(FAMILY[size], vocab, seq_len, 0, seed=0))
    params = {n: p.detach().clone().unsqueeze(0) for n, p in model.named_parameters()}
    w = torch.randint(0, vocab, (batch * (steps + 2), seq_len + 1))
    data = TrainData(w, w, w[:1], w[:1])
    lr = torch.tensor([1e-3])
    chain = T.chain(
        T.ScaleByAdam(0.9, 0.95),
        T.AddDecayedWeights(torch.tensor([0.01])),
        T.ScaleByLR(lr, T.make_schedule("cosine", 2, steps)),
    )
    eng = Engine(
        StackedForward(model),
        params,
        LMCrossEntropy(),
        chain,
        data,
        Schedule(steps=steps, batch_size=batch, eval_every=10**9, checkpoint_every=10**9),
        evaluator=lambda p, f, s: [{"step": s}],
        description=f"bench {size}",
    )
    res = eng.run()
    return res.steps_run * batch * seq_len / res.train_seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="xxs,xs,s,m,l")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    progress.set_quiet(True)
    peak = matmul_flops()
    rows = []
    for size in parse_sizes(args.sizes):
        spec = FAMILY[size]
        tps = engine_tokens_per_s(size, args.steps, args.seq_len, args.batch, args.vocab)
        fpt = flops_per_token(
            spec.non_embedding_params(), args.vocab, spec.d_model, spec.n_layers, args.seq_len
        )
        rows.append(
            {
                "size": size,
                "non_embedding_params": spec.non_embedding_params(),
                "tokens_per_s": tps,
                "flops_per_token": fpt,
                "achieved_gflops": tps * fpt / 1e9,
                "fraction_of_matmul": tps * fpt / peak,
            }
        )
    out = {
        "threads": args.threads,
        "seq_len": args.seq_len,
        "batch": args.batch,
        "vocab": args.vocab,
        "matmul_gflops": peak / 1e9,
        "sizes": rows,
    }
    print(f"fp32 matmul 2048^3: {peak / 1e9:.1f} GFLOP/s ({args.threads} threads)")
    print(f"{'size':5s} {'N (non-emb)':>12s} {'tokens/s':>10s} {'GFLOP/s':>8s} {'of matmul':>9s}")
    for r in rows:
        print(
            f"{r['size']:5s} {r['non_embedding_params']:>12,} {r['tokens_per_s']:>10,.0f} "
            f"{r['achieved_gflops']:>8.2f} {100 * r['fraction_of_matmul']:>8.1f}%"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
