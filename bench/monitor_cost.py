"""Cost of the monitor TrainerCallbacks in a real Hugging Face Trainer run, side by side in one process.

    python bench/monitor_cost.py [--steps 120] [--logging-steps 5] [--reps 2] [--threads 2]

Model: a GPT-2 of 4 layers, width 128, vocab 512 (~0.9M parameters), sequences of 64 tokens, batch 8,
random token data (timing only). Modes, interleaved in every repetition:

  none      Trainer alone
  default   PlasticityCallback(probe of 16 rows) + LossPowerLawCallback with their defaults
            (probe_size=8, budget=0.10)
  every-1   PlasticityCallback(probe of 16, probe_size=None, every=1) + LossPowerLawCallback:
            the previous default (every log step, the whole probe)

Prints each mode's median train() wall time, its overhead over `none` (median of per-repetition
ratios: the wall times move with other jobs on a shared machine), and the plasticity monitor's time
over the training time of the same run (the sum of its logged monitor/seconds over train()'s wall
time minus that sum; median over repetitions): the figure the 10% budget is about.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from transferlab import monitor


def model() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=4, n_embd=128, n_head=4, vocab_size=512, n_positions=64, bos_token_id=0,
                     eos_token_id=0, attn_implementation="eager")
    return GPT2LMHeadModel(cfg)


def run(mode: str, steps: int, logging_steps: int, data, probe) -> tuple[float, dict]:
    cbs = []
    if mode == "default":
        cbs = [monitor.PlasticityCallback(probe), monitor.LossPowerLawCallback()]
    elif mode == "every-1":
        cbs = [monitor.PlasticityCallback(probe, probe_size=None, every=1), monitor.LossPowerLawCallback()]
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, max_steps=steps, logging_steps=logging_steps,
                                 per_device_train_batch_size=8, learning_rate=3e-4, report_to="none",
                                 save_strategy="no", disable_tqdm=True, use_cpu=True, seed=0)
        trainer = Trainer(model=model(), args=args, train_dataset=data, callbacks=cbs)
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    info: dict = {}
    if cbs:
        logs = [h for h in trainer.state.log_history if "monitor/fisher_trace" in h]
        info = {"computed": len(logs), "logs": sum("loss" in h for h in trainer.state.log_history),
                "share": sum(h["monitor/seconds"] for h in logs) / (wall - sum(h["monitor/seconds"] for h in logs)),
                "seconds_each": statistics.median(h["monitor/seconds"] for h in logs)}
    return wall, info


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--logging-steps", type=int, default=5)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": x, "labels": x} for x in torch.randint(0, 512, (a.steps * 8, 64), generator=g)]
    ids = torch.randint(0, 512, (16, 64), generator=g)
    probe = {"input_ids": ids, "labels": ids}
    modes = ["none", "default", "every-1"]
    run("default", 10, 5, data, probe)  # warm up torch.func and the Trainer
    walls: dict[str, list[float]] = {m: [] for m in modes}
    infos: dict[str, list[dict]] = {m: [] for m in modes}
    for _ in range(a.reps):
        for m in modes:
            w, info = run(m, a.steps, a.logging_steps, data, probe)
            walls[m].append(w)
            infos[m].append(info)
    print(f"{a.steps} steps, a log every {a.logging_steps}, threads={a.threads}, reps={a.reps}")
    for m in modes:
        w = statistics.median(walls[m])
        over = statistics.median(x / b - 1 for x, b in zip(walls[m], walls["none"]))
        extra = ""
        if m != "none":
            i = infos[m]
            shares = ", ".join(f"{x['share']:.3f}" for x in i)
            extra = (f"  computed at {statistics.median(x['computed'] for x in i)}/{i[0]['logs']} logs, "
                     f"{statistics.median(x['seconds_each'] for x in i):.3f} s each, monitor / training time "
                     f"{statistics.median(x['share'] for x in i):.3f} "
                     f"(all: {shares})")
        print(f"{m:8s} train() {w:7.2f} s  (all: {', '.join(f'{x:.2f}' for x in walls[m])})  "
              f"overhead {over:+.1%}{extra}")


if __name__ == "__main__":
    main()
