"""The GPU check: what a user with one GPU gets, in one JSON of figures (target: <= 8 minutes on one GPU).

    python bench/gpu_check.py --out gpu_check.json [--store DIR] [--quick]

1. the zoo's ``full`` build for its three smallest sizes (xxs, xs, s: 20 tokens per parameter on the large
   prose corpus) with ``train.device=auto`` (CUDA when present) and bf16 where supported;
2. the grokking default with 16 seeds (one ensemble). The grokking study has no device option yet, so this
   part runs on the CPU cores of the GPU machine, and the JSON says so;
3. an EFT decode: base = s, fine-tuned = xs, reference = xxs from step 1, 64 greedy tokens for 8 prompts,
   plain and speculative, on the GPU.

``--quick`` shrinks every part to seconds (the built-in micro presets) so the script itself can be checked
on a CPU. Tests never need a GPU; run this whenever one is available and record the figures in
docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch


def device_info() -> dict:
    info = {"torch": torch.__version__, "cuda": torch.cuda.is_available(), "cpu_threads": torch.get_num_threads(),
            "machine": platform.machine(), "load_average": os.getloadavg()[0]}
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), bf16=torch.cuda.is_bf16_supported())
    return info


def zoo_part(store: Path, quick: bool) -> dict:
    from transferlab.core import progress
    from transferlab.core.config import resolve
    from transferlab.store import Store
    from transferlab.zoo.build import PRESETS, ZooConfig, build_zoo

    progress.set_quiet(True)
    if quick:
        cfg = resolve(ZooConfig, presets=PRESETS, preset="micro", overrides=["sizes=[xxs,xs,s]"])
    else:
        cfg = resolve(ZooConfig, presets=PRESETS, preset="full", overrides=["sizes=[xxs,xs,s]", "train.device=auto"])
    t0 = time.perf_counter()
    zb = build_zoo(cfg, Store(store), report=False)
    return {
        "wall_seconds": time.perf_counter() - t0,
        "models": [{k: e.get(k) for k in ("name", "size", "non_embedding_params", "tokens_seen", "tokens_per_param",
                                          "dtype", "device", "tokens_per_second", "build_wall_seconds",
                                          "heldout_loss")} for e in zb.entries],
        "loss_vs_n": zb.fit,
        "paths": {e["size"]: str(zb.zoo.root / e["path"]) for e in zb.entries},
    }


def grok_part(store: Path, quick: bool) -> dict:
    from transferlab.core.config import resolve
    from transferlab.store import Store
    from transferlab.studies.grokking import run
    from transferlab.studies.grokking.config import PRESETS, GrokConfig

    overrides = ["steps=300", "eval_every=50"] if quick else []
    cfg = resolve(GrokConfig, presets=PRESETS, preset="default", overrides=overrides)
    t0 = time.perf_counter()
    res = run(cfg, Store(store), seeds=4 if quick else 16, report=False)
    agg = res.get("aggregate", {})
    return {"device": "cpu (the grokking study has no device option yet)", "seeds": 4 if quick else 16,
            "wall_seconds": time.perf_counter() - t0,
            "steps_to_generalize": agg.get("steps_to_generalize")}


def eft_part(paths: dict, quick: bool) -> dict:
    from transferlab.eft.api import EFT

    device = "cuda" if torch.cuda.is_available() else "cpu"
    eft = EFT.from_pretrained(paths["s"], paths["xs"], paths["xxs"], device=device)
    prompts = ["def ", "class ", "import ", "Return the ", "# ", "for i in ", "if x ", "The "]
    n = 8 if quick else 64
    out = {"device": device, "prompts": len(prompts), "new_tokens": n}
    for name, spec in (("plain", 0), ("speculative", 4)):
        t0 = time.perf_counter()
        r = eft.generate(prompts, max_new_tokens=n, greedy=True, speculative=spec)
        dt = time.perf_counter() - t0
        out[name] = {"seconds": dt, "tokens_per_second": len(prompts) * n / dt,
                     "first_text": r.generations[0].text}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--store", default=None, help="store folder (default: a temporary one)")
    ap.add_argument("--quick", action="store_true", help="seconds-sized parts, to check the script on a CPU")
    a = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="tl-gpu-check-") if a.store is None else None
    store = Path(a.store or tmp.name)
    t0 = time.perf_counter()
    res: dict = {"device": device_info(), "quick": a.quick}
    res["zoo"] = zoo_part(store, a.quick)
    res["grok"] = grok_part(store, a.quick)
    res["eft"] = eft_part(res["zoo"]["paths"], a.quick)
    res["wall_seconds"] = time.perf_counter() - t0
    Path(a.out).write_text(json.dumps(res, indent=2, default=str))
    print(json.dumps({k: res[k]["wall_seconds"] for k in ("zoo", "grok", "eft") if "wall_seconds" in res[k]}
                     | {"total": res["wall_seconds"]}, indent=1))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
