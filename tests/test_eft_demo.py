"""`transferlab eft demo`: the zoo demo's 2x2 on the micro preset (structure, sanity, reuse, report).

The micro preset pretrains two tiny zoo models (xxs, xs) on a few thousand prose+code tokens and
fine-tunes both on code; the numbers mean little, but their structure and the facts that must
hold at any scale are checked here.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.browser import render
from transferlab.core.config import resolve
from transferlab.eft import EFT
from transferlab.store import Store
from transferlab.studies.eft.demo import MODEL_KEYS, PRESETS, EFTDemoConfig, gap_fraction, heldout_windows, run_zoo_demo
from transferlab.studies.eft.heldout import heldout_loss, window_logprobs
from transferlab.zoo import Zoo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("eft_demo") / "runs")
    cfg = resolve(EFTDemoConfig, presets=PRESETS, preset="micro")
    return cfg, store, run_zoo_demo(cfg, store)


def test_micro_table_structure_and_sanity(demo):
    cfg, _, s = demo
    assert s["preset"] == "micro" and s["reused"] is False
    assert [r["model"] for r in s["table"]] == list(MODEL_KEYS)
    rows = {r["model"]: r for r in s["table"]}
    ceiling = math.log(cfg.vocab_size) + 1.0
    for r in s["table"]:
        for k in ("target_loss", "source_loss"):
            assert math.isfinite(r[k]) and 0 < r[k] < ceiling, (r["model"], k, r[k])
    # the 2x2: rows are the fine-tuning scale, columns the knowledge (pretraining) scale
    for split in ("target", "source"):
        g = s["grid"][f"{split}_loss"]
        assert g["ft_small"]["pretrain_small"] == rows["small-ft"][f"{split}_loss"]
        assert g["ft_small"]["pretrain_large"] == rows["eft-up"][f"{split}_loss"]
        assert g["ft_large"]["pretrain_small"] == rows["eft-down"][f"{split}_loss"]
        assert g["ft_large"]["pretrain_large"] == rows["large-ft"][f"{split}_loss"]
    assert (rows["eft-up"]["base"], rows["eft-up"]["ft"], rows["eft-up"]["ref"]) == ("large", "small-ft", "small")
    assert (rows["eft-down"]["base"], rows["eft-down"]["ft"], rows["eft-down"]["ref"]) == ("small", "large-ft", "large")
    # the fine-tunes beat their own bases on the target
    assert rows["small-ft"]["target_loss"] < rows["small"]["target_loss"]
    assert rows["large-ft"]["target_loss"] < rows["large"]["target_loss"]
    # EFT with beta = 0 is the base model alone, exactly; the sweep at the config's beta is the 2x2's mix
    sweep = {k: {p["beta"]: p for p in v} for k, v in s["beta_sweep"].items()}
    for eft, base in (("eft-up", "large"), ("eft-down", "small")):
        for split in ("target", "source"):
            assert sweep[eft][0.0][f"{split}_loss"] == rows[base][f"{split}_loss"]
            assert sweep[eft][cfg.beta][f"{split}_loss"] == pytest.approx(rows[eft][f"{split}_loss"], abs=1e-6)
    assert s["checks"]["all_finite"] and s["checks"]["beta0_up_minus_large"] == 0.0
    e = s["scale_effects"]["target"]
    L = {k: r["target_loss"] for k, r in rows.items()}
    assert e["finetune_scale"] == pytest.approx((L["eft-down"] + L["large-ft"] - L["small-ft"] - L["eft-up"]) / 2)
    # the headline is the gap fraction computed from the table
    t = s["gap"]["target"]
    want = gap_fraction(rows["small-ft"]["target_loss"], rows["large-ft"]["target_loss"], rows["eft-up"]["target_loss"])
    assert s["up_fraction_closed"] == t["up_fraction_closed"] == want
    assert s["target_met"] == (want is not None and want >= 0.5)
    # what the small fine-tune's delta adds beyond the large base alone = up-scaling's fraction - the base's
    if want is not None:
        base = (L["small-ft"] - L["large"]) / (L["small-ft"] - L["large-ft"])
        assert t["base_fraction_closed"] == pytest.approx(base)
        assert s["delta_fraction_added"] == t["delta_fraction_added"] == pytest.approx(want - base)
        assert s["delta_target_met"] == (want - base >= 0.25)
    if t["up_fraction_ci95"] is not None:
        assert t["up_fraction_ci95"][0] <= t["up_fraction_ci95"][1]
    n = s["scored"]["windows"]
    assert n["target"] == cfg.score_tokens // (cfg.seq_len + 1) and s["scored"]["target_tokens"] == n["target"] * 16


def test_saved_models_reproduce_the_table_through_the_public_api(demo):
    """The saved folders load with EFT.from_pretrained and give the table's EFT loss; the window scorer
    agrees with EFT.score (the text scoring mode) token for token."""
    cfg, store, s = demo
    m = s["models"]
    eft = EFT.from_pretrained(m["large"]["path"], m["small-ft"]["path"], m["small"]["path"], beta=cfg.beta)
    zoo = Zoo(s["zoo"])
    target = zoo.ensure_tokens(cfg.target_corpus, _tokenizer_dir(zoo), cfg.val_percent, cfg.max_files)
    w = heldout_windows(target.val, cfg.seq_len, cfg.score_tokens)
    lp = window_logprobs({"up": eft}, w, batch_size=7)["up"]
    assert heldout_loss(lp) == pytest.approx(s["table"][MODEL_KEYS.index("eft-up")]["target_loss"], abs=1e-6)
    # window scoring == EFT.score on text: same ids, same per-token EFT log-probs
    tok = eft.tokenizer
    prompt, cont = "def f(a):", " return a"  # within the micro context of 16 tokens
    scored = eft.score(prompt, cont)[0]
    ids = list(tok(prompt)["input_ids"]) + list(tok(cont, add_special_tokens=False)["input_ids"])
    mine = window_logprobs({"up": eft}, torch.tensor([ids]))["up"][0, -len(scored.tokens) :]
    want = torch.tensor([t.eft_logprob for t in scored.tokens])
    assert torch.allclose(mine, want, atol=1e-5)


def _tokenizer_dir(zoo: Zoo):
    dirs = sorted((zoo.root / "tokenizers").iterdir())
    assert len(dirs) == 1
    return dirs[0]


def test_cli_reuses_the_runs_and_writes_a_working_report(demo, cli):
    cfg, store, s = demo
    code, out, err = cli(["eft", "demo", "--preset", "micro", "--json", "--store", str(store.root)])
    assert code == 0, err
    again = json.loads(out)
    assert again["reused"] is True and again["table"] == json.loads(json.dumps(s["table"]))
    page = render(s["report"])
    assert page["errors"] == "" and page["figures"] == 2 and page["rendered"] == 2
    html = open(s["report"]).read()
    assert "up-scaled EFT" in html and "down-scaled EFT" in html and "2x2" in html


def test_cli_presets_config_and_bad_input(cli):
    code, out, _ = cli(["eft", "demo", "--list-presets", "--json"])
    assert code == 0 and set(json.loads(out)) == {"default", "mini", "micro"}
    code, out, _ = cli(["eft", "demo", "--print-config"])
    assert code == 0 and "small: xs" in out and "preset: default" in out
    code, _, err = cli(["eft", "demo", "--preset", "micro", "--set", "small=xs", "--set", "large=xxs"])
    assert code == 2 and "fewer parameters" in err
    code, _, err = cli(["eft", "demo", "--preset", "micro", "--set", "large=huge"])
    assert code == 2 and "huge" in err
    code, _, err = cli(["eft", "demo", "--preset", "nope"])
    assert code == 2 and "unknown preset" in err
    code, _, err = cli(["eft", "demo", "--preset", "micro", "--set", "target_corpus=prose"])
    assert code == 2 and "must differ" in err


def test_heldout_windows_spread_over_the_whole_split():
    ids = torch.arange(10 * 5)  # 10 windows of 5 tokens (seq_len 4)
    assert heldout_windows(ids, 4).shape == (10, 5)
    assert heldout_windows(ids, 4, 10_000).shape == (10, 5)
    some = heldout_windows(ids, 4, 3 * 5)
    assert some[:, 0].tolist() == [0, 20, 45]  # first, middle, last window: not the first three
