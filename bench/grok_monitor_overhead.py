"""Overhead of the plasticity monitors the grokking engine logs, per logged step and amortized.

    python bench/grok_monitor_overhead.py [--presets default,nanda2023] [--steps 100] [--repeats 5]

For each preset: the engine's time per training step (1 member, evaluations off), the time of one
evaluation of the plasticity monitors callback (per-sample gradients of the 256-example probe, dormant units and
feature effective rank on the whole training set) per member, and that cost spread over the
``monitor_every x eval_every`` steps between two calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from transferlab.data.algorithmic import make_dataset
from transferlab.studies.grokking.config import PRESETS, GrokConfig
from transferlab.studies.grokking.run import make_chain, model_factory
from transferlab.train.engine import Engine, Evaluation, Schedule, TrainData
from transferlab.train.ensemble import StackedForward, build_members
from transferlab.train.losses import make_loss
from transferlab.train.plasticity import PlasticityMonitors


def measure(cfg: GrokConfig, steps: int, repeats: int) -> dict[str, float]:
    data = make_dataset(cfg.task.operation, cfg.task.p, cfg.task.train_fraction, cfg.task.split_seed)
    base, params = build_members(model_factory(cfg, data.n_tokens, data.n_classes), [cfg.seed])
    lr, wd = torch.tensor([cfg.optimizer.lr]), torch.tensor([cfg.optimizer.weight_decay])
    chain, _ = make_chain(cfg, lr, wd)
    loss = make_loss(cfg.loss.kind, cfg.loss.dtype)
    tdata = TrainData(data.x_train, data.y_train, data.x_val, data.y_val)
    step_s = []
    for _ in range(repeats):
        sched = Schedule(steps=steps, eval_every=10**9, checkpoint_every=10**9)
        res = Engine(StackedForward(base), {k: v.clone() for k, v in params.items()}, loss, chain, tdata, sched,
                     lambda p, f, s: [{}], runs=None).run()
        step_s.append(res.train_seconds / steps)
    monitors = PlasticityMonitors(model_factory(cfg, data.n_tokens, data.n_classes), loss, data.x_train,
                                  data.y_train, eval_every=cfg.schedule.eval_every, every=max(1, cfg.monitors.every),
                                  last_step=cfg.schedule.steps, probe_size=cfg.monitors.probe)
    monitors.on_measure(Evaluation(0, res.params, None, [{}]))  # warm-up (vmap tracing)
    mon_s = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        monitors.on_measure(Evaluation(0, res.params, None, [{}]))
        mon_s.append(time.perf_counter() - t0)
    step, mon = statistics.median(step_s), statistics.median(mon_s)
    every = cfg.monitors.every * cfg.schedule.eval_every
    return {"train_step_ms": step * 1e3, "monitors_ms_per_logged_step": mon * 1e3,
            "x_one_train_step": mon / step, "logged_every_steps": every,
            "amortized_overhead": mon / (every * step)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="default,nanda2023")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = {}
    for name in a.presets.split(","):
        cfg = GrokConfig(**PRESETS.values(name))
        out[name] = measure(cfg, a.steps, a.repeats)
        print(name, json.dumps(out[name]), flush=True)


if __name__ == "__main__":
    main()
