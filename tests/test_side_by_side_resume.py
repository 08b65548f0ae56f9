"""The long side-by-side runs (repro/side_by_side.py) survive a kill: the reference-side loop killed with
SIGKILL between two checkpoints and rerun gives the same curve, parameters, optimizer state and RNG state, bit
for bit, as a run never interrupted; our side resumes through the store and writes its curve as CSV."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPRO = Path(__file__).resolve().parents[1] / "repro"

# A tiny stand-in for a reference checkout's pieces (model, AdamW, a loss with `reduction`), driven by the loop
# as the real one is. KILL_AT: the training step at which the process kills itself with SIGKILL (-1: never).
DRIVER = """
import os, signal, sys
import torch
sys.path.insert(0, {repro!r})
import side_by_side

KILL_AT = int(sys.argv[2])
calls = [0]

def loss_fn(logits, y, reduction="mean"):
    if reduction == "mean":
        if calls[0] == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
        calls[0] += 1
    losses = torch.nn.functional.cross_entropy(logits.double(), y, reduction="none")
    return losses.mean() if reduction == "mean" else losses

torch.manual_seed(0)
x, y = torch.randn(40, 8), torch.randint(0, 5, (40,))
xv, yv = torch.randn(20, 8), torch.randint(0, 5, (20,))
model = torch.nn.Sequential(torch.nn.Linear(8, 16, bias=False), torch.nn.ReLU(), torch.nn.Linear(16, 5, bias=False))
opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.0, eps=1e-25, betas=(0.9, 0.999))
ckpt = os.path.join(sys.argv[1], "checkpoints")
out = side_by_side.resumable_loop(model, opt, loss_fn, x, y, xv, yv, steps=12, every=2, ckpt_dir=ckpt,
                                  checkpoint_every=4, csv_path=os.path.join(sys.argv[1], "curve.csv"),
                                  identity={{"kind": "tiny"}})
print(out["resumed_from"])
"""


def _drive(folder: Path, kill_at: int) -> subprocess.CompletedProcess:
    script = folder.parent / "driver.py"
    script.write_text(DRIVER.format(repro=str(REPRO)))
    return subprocess.run([sys.executable, str(script), str(folder), str(kill_at)], capture_output=True, text=True)


def _final(folder: Path) -> dict[str, torch.Tensor]:
    (last,) = sorted((folder / "checkpoints").glob("step-*"))[-1:]
    return load_file(str(last / "tensors.safetensors"))


def test_reference_loop_killed_between_checkpoints_resumes_bit_for_bit(tmp_path):
    whole = _drive(tmp_path / "whole", -1)
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.split() == ["0"]

    killed = _drive(tmp_path / "killed", 9)  # during step 9: checkpoints at 0, 4 and 8 are on disk
    assert killed.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").glob("step-*")) == [
        "step-000000004", "step-000000008"]  # the newest two are kept
    resumed = _drive(tmp_path / "killed", -1)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.split() == ["8"]  # continued from step 8, not from 0

    assert (tmp_path / "killed" / "curve.csv").read_bytes() == (tmp_path / "whole" / "curve.csv").read_bytes()
    a, b = _final(tmp_path / "whole"), _final(tmp_path / "killed")
    assert sorted(a) == sorted(b)
    assert {k for k in a if k.startswith("opt.")} >= {"opt.0.exp_avg", "opt.0.exp_avg_sq", "opt.0.step"}
    for k in a:
        assert torch.equal(a[k], b[k]), k  # parameters, Adam moments and step, the RNG state
    steps = [line.split(",")[0] for line in (tmp_path / "whole" / "curve.csv").read_text().splitlines()[1:]]
    assert steps == ["0", "2", "4", "6", "8", "10", "12"]


def test_reference_loop_refuses_checkpoints_of_another_run(tmp_path):
    sys.path.insert(0, str(REPRO))
    try:
        import side_by_side
    finally:
        sys.path.remove(str(REPRO))
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3, bias=False)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    side_by_side.save_loop_checkpoint(tmp_path, 4, model, opt, {"curve": [], "cpu_seconds": 0.0,
                                                                "identity": {"seed": 1}})
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))

    def loss_fn(logits, y, reduction="mean"):
        losses = torch.nn.functional.cross_entropy(logits, y, reduction="none")
        return losses.mean() if reduction == "mean" else losses

    with pytest.raises(SystemExit, match="of another run"):
        side_by_side.resumable_loop(model, opt, loss_fn, x, y, x, y, steps=8, every=2, ckpt_dir=tmp_path,
                                    checkpoint_every=4, identity={"seed": 2})


def test_our_side_writes_its_curve_and_reuses_a_finished_run(tmp_path):
    sys.path.insert(0, str(REPRO))
    try:
        import side_by_side
    finally:
        sys.path.remove(str(REPRO))
    kw = dict(steps=6, every=2, seed=42, threads=1, store_root=tmp_path / "ours", csv_path=tmp_path / "ours.csv",
              checkpoint_every=2, extra=["p=13", "width=16"])
    first = side_by_side.ours_resumable("prieto2025-stablemax", **kw)
    assert first["status"] == "done"
    rows = side_by_side.read_curve_csv(tmp_path / "ours.csv")
    assert [r["step"] for r in rows] == [0, 2, 4, 6]
    assert [r["val_acc"] for r in rows] == [r["val_acc"] for r in first["curve"]]
    assert all(r["collapse_frac"] is not None and r["zero_loss_frac"] is not None for r in rows)
    again = side_by_side.ours_resumable("prieto2025-stablemax", **kw)  # a rerun reuses the finished run
    assert again["run_id"] == first["run_id"] and again["curve"] == first["curve"]


def test_plot_draws_both_sides_and_the_papers_curve_on_the_whole_budget(tmp_path):
    sys.path.insert(0, str(REPRO))
    try:
        import prieto2025_side_by_side as prieto
        import side_by_side
    finally:
        sys.path.remove(str(REPRO))
    row = dict(train_acc=1.0, val_acc=0.0, train_loss=1e-3, val_loss=8.0, weight_norm_sq=1e5, collapse_frac=1.0,
               zero_loss_frac=0.0)
    side_by_side.write_curve_csv([{"step": 0, **row}, {"step": 200, **row, "val_acc": 0.002}], tmp_path / "ours.csv")
    side_by_side.write_curve_csv([{"step": 0, **row}], tmp_path / "reference.csv")
    prieto.plot(tmp_path, tmp_path / "page.html", "StableMax <side by side>")
    page = (tmp_path / "page.html").read_text()
    assert "StableMax &lt;side by side&gt;" in page  # escaped
    assert "official code to step 0, ours (prieto2025-stablemax) to step 200" in page
    assert "paper, Fig. 1(b) test accuracy (read by eye)" in page
    assert page.count('"range":[0,80000]') == 6  # every panel on the paper's budget
