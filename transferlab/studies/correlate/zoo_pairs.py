"""The zoo's own pretrain -> SFT pairs over data mixtures and scales, scored and correlated end to end.

For every mixture ``p`` (percent prose tokens, the rest code) and every zoo size:

1. **pretrain** a zoo LM on the mixture with the zoo's :func:`transferlab.zoo.train.pretrain`. The
   mixture is a token stream made here: with
   ``P = min(len(prose.train), len(code.train))`` tokens, the first ``round(p P / 100)`` tokens of
   the zoo's encoded prose stream followed by the first ``P - round(p P / 100)`` of its code stream
   (validation likewise); every mixture therefore has the same pool size, and ``train_lm`` cuts
   and shuffles windows from it. The zoo itself is unchanged; the models are recorded in its manifest
   with corpus ``mix:prose<p>-code<100-p>``.
2. **SFT**: fine-tune that model with :func:`transferlab.zoo.train.finetune` for ``sft_steps`` on the
   held-out instruction-like set of
   :func:`~transferlab.studies.correlate.zoo_benchmarks.sft_documents`.
3. **evaluate** both stages on the multiple-choice benchmarks of
   :mod:`~transferlab.studies.correlate.zoo_benchmarks` (summed log-likelihood per choice).

The tidy CSV (model, stage, mixture, scale, benchmark, accuracy, confidence) is then analysed by
:func:`transferlab.studies.correlate.run`. Every LM run is a store run keyed by its config, so a
second call retrains nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from transferlab.core.devices import torch_threads
from transferlab.core.progress import say
from transferlab.store import Store
from transferlab.studies.correlate import zoo_benchmarks as zb
from transferlab.studies.correlate.study import CorrelateZooStudy
from transferlab.studies.correlate.zoo_config import ZooPairsConfig
from transferlab.zoo.store import TokenData, Zoo, corpus_key
from transferlab.zoo.train import finetune, pretrain

STAGES = ("pretrain", "sft")
CSV_COLUMNS = ["model", "stage", "mixture", "scale", "benchmark", "accuracy", "confidence", "continuous"]


def mixture_name(p: int) -> str:
    return f"prose{p}-code{100 - p}"


def _cut(prose: torch.Tensor, code: torch.Tensor, p: int) -> torch.Tensor:
    pool = min(len(prose), len(code))
    n_prose = round(p * pool / 100)
    return torch.cat([prose[:n_prose], code[: pool - n_prose]]).contiguous()


def mixture_data(prose: TokenData, code: TokenData, p: int) -> TokenData:
    """A prose/code token mixture with ``p`` percent prose (see the module docstring)."""
    if prose.tokenizer != code.tokenizer:
        raise ValueError("prose and code must be encoded with the same tokenizer")
    key = hashlib.sha256(json.dumps(["mix-v1", prose.corpus_key, code.corpus_key, p]).encode()).hexdigest()
    train, val = _cut(prose.train, code.train, p), _cut(prose.val, code.val, p)
    info = {"corpus": f"mix:{mixture_name(p)}", "prose_percent": p, "train_tokens": int(len(train)),
            "val_tokens": int(len(val)), "prose_key": prose.corpus_key, "code_key": code.corpus_key}
    return TokenData(f"mix:{mixture_name(p)}", key[:16], prose.tokenizer, train, val, info)


def sft_data(cfg: ZooPairsConfig, tok: Any) -> TokenData:
    """The SFT documents encoded with the zoo tokenizer; one document in ten (by hash) is validation."""
    from transferlab.data.tokenizer import encode_documents

    docs = zb.sft_documents(cfg.val_percent)
    is_val = [int(hashlib.sha256(d.encode()).hexdigest(), 16) % 10 == 0 for d in docs]
    train = encode_documents(tok, [d for d, v in zip(docs, is_val) if not v])
    val = encode_documents(tok, [d for d, v in zip(docs, is_val) if v])
    key = hashlib.sha256(b"sft-v1" + train.numpy().tobytes() + val.numpy().tobytes()).hexdigest()[:16]
    return TokenData("sft:doc-to-code", key, "", train, val, {"docs": len(docs), "train_tokens": len(train)})


def build_pairs(cfg: ZooPairsConfig, store: Store, zoo_root: str | Path | None = None
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any], dict[tuple[str, str, str], Any]]:
    """Train/reuse every pair and score it: (tidy rows, model rows, benchmark info, per-item scores by (model,
    stage, benchmark) as the correlate loader's ``SampleStats``)."""
    from transferlab.data.tokenizer import load_tokenizer
    from transferlab.studies.correlate.harness import SampleStats

    zoo = Zoo(zoo_root if zoo_root is not None else store.root / "zoo")
    corpus_key("prose", cfg.val_percent, cfg.max_files)
    tok_dir, _ = zoo.ensure_tokenizer(cfg.vocab_size, ("prose", "code"), cfg.val_percent, cfg.max_files)
    tok = load_tokenizer(tok_dir)
    prose = zoo.ensure_tokens("prose", tok_dir, cfg.val_percent, cfg.max_files)
    code = zoo.ensure_tokens("code", tok_dir, cfg.val_percent, cfg.max_files)
    sft = sft_data(cfg, tok)
    t0 = time.perf_counter()
    benches = zb.build_benchmarks(tok, n_items=cfg.n_items, max_cont_tokens=cfg.seq_len // 2, seed=cfg.seed,
                                  names=cfg.benchmarks,
                                  val_percent=cfg.val_percent)
    bench_info = {"benchmarks": {b: {"category": zb.ALL_BENCHMARKS[b], "n_items": len(v),
                                     "example": {"context": v[0].context, "choices": list(v[0].choices),
                                                 "gold": v[0].gold}} for b, v in benches.items()},
                  "build_seconds": time.perf_counter() - t0, "sft_docs": sft.info["docs"],
                  "sft_train_tokens": sft.info["train_tokens"]}
    rows: list[dict[str, Any]] = []
    models: list[dict[str, Any]] = []
    samples: dict[tuple[str, str, str], Any] = {}
    for p in cfg.mixtures:
        data = mixture_data(prose, code, p)
        for size in cfg.sizes:
            entry = pretrain(zoo, store, size, data, tok, cfg.pretrain, cfg.tokens_for(size), tag=f"mix{p}")
            pre_name = entry["name"]
            sft_tokens = cfg.sft_steps * cfg.sft.batch_size * cfg.sft.seq_len
            sft_entry = finetune(zoo, store, pre_name, sft, tok, cfg.sft, sft_tokens, tag="sft",
                                 steps=cfg.sft_steps)
            sft_name = sft_entry["name"]
            sft_model = zoo.load(sft_name)
            model_id = f"mix{p}-{size}"
            t1 = time.perf_counter()
            with torch_threads(cfg.pretrain.num_threads):
                for stage, m in (("pretrain", zoo.load(pre_name)), ("sft", sft_model)):
                    for b, items in benches.items():
                        s = zb.score_items(m, tok, items, cfg.seq_len)
                        samples[(model_id, stage, b)] = SampleStats(
                            s["p_gold"], s["p_max"], s["correct"], s["brier"], score=s["correct"],
                            continuous=s["continuous"], doc_keys=[str(i) for i in range(len(items))])
                        rows.append({"model": model_id, "stage": stage, "mixture": mixture_name(p),
                                     "scale": size, "benchmark": b, "accuracy": float(s["correct"].mean()),
                                     "confidence": float(s["p_gold"].mean()),
                                     "continuous": float(s["continuous"].mean())})
            models.append({"model": model_id, "mixture": mixture_name(p), "scale": size,
                           "non_embedding_params": entry["non_embedding_params"],
                           "pretrain": pre_name, "sft": sft_name, "pretrain_val_loss": entry.get("val_loss"),
                           "pretrain_tokens": entry.get("tokens_seen"),
                           "eval_seconds": time.perf_counter() - t1})
            say(f"{model_id}: " + ", ".join(f"{r['stage']}/{r['benchmark']}={r['accuracy']:.2f}"
                                             for r in rows[-2 * len(benches):]))
    return rows, models, bench_info, samples


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=CSV_COLUMNS).to_csv(p, index=False)
    return p


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """The rows ``write_csv`` wrote (missing confidences as None; a CSV of an earlier version, without the
    ``continuous`` column, reads with it empty)."""
    df = pd.read_csv(path).reindex(columns=CSV_COLUMNS)
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
            for r in df.to_dict("records")]


def write_report(cfg: ZooPairsConfig, rows: list[dict[str, Any]], models: list[dict[str, Any]],
                 result: dict[str, Any], path: Path) -> Path:
    import plotly.graph_objects as go

    from transferlab.report import Page
    from transferlab.studies.correlate.report import add_decisions

    df = pd.DataFrame(rows, columns=CSV_COLUMNS)
    page = Page("Zoo pretrain -> SFT pairs", f"preset {cfg.preset} · {len(models)} models · "
                f"{df['benchmark'].nunique()} benchmarks")
    page.text("Each model is pretrained on a prose/code token mixture, fine-tuned on held-out docstring -> "
              "code documents, and scored on stdlib multiple-choice benchmarks by summed log-likelihood. "
              f"Cross-stage analysis: {result.get('report')}")
    wide = df.pivot_table(index=["model", "benchmark"], columns="stage", values="accuracy").reset_index()
    fig = go.Figure()
    for b, g in wide.groupby("benchmark"):
        fig.add_trace(go.Scatter(x=g["pretrain"], y=g["sft"], mode="markers", name=str(b), text=g["model"],
                                 hovertemplate="%{text}: %{x:.2f} -> %{y:.2f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"},
                             name="y = x"))
    fig.update_layout(title="Accuracy before (pretrain) and after SFT", xaxis_title="pretrain accuracy",
                      yaxis_title="SFT accuracy", height=460)
    page.figure(fig, "One point per model and benchmark; chance is 0.25.")
    page.heading("Cross-stage Spearman per benchmark")
    page.table([{"benchmark": r["benchmark"], "category": r["category"], "Spearman accuracy": r["spearman"],
                 "Spearman confidence": result["benchmarks"][r["benchmark"]].get("spearman_confidence"),
                 "verdict": r["verdict"]} for r in result["ranking_accuracy"]])
    add_decisions(page, result)
    page.heading("Models")
    page.table(models)
    page.heading("Scores")
    page.table(rows)
    return page.write(path)


def run(cfg: ZooPairsConfig, store: Store | str | Path, zoo_root: str | Path | None = None, *,
        report: bool = True) -> dict[str, Any]:
    """Build the pairs, write ``pairs.csv``, run the correlate analysis on it, write the reports."""
    from transferlab.studies.correlate import CorrelateConfig, harness
    from transferlab.studies.correlate import run as correlate_run

    t0 = time.perf_counter()
    st = store if isinstance(store, Store) else Store(store)
    done = st.done(CorrelateZooStudy.name, cfg)  # a finished run is reused, as every study's (nothing is rescored)
    if done is not None and (not report or (done.get("report") and Path(done["report"]).is_file())):
        return {**done, "reused": True}
    rows, models, bench_info, samples = build_pairs(cfg, st, zoo_root)
    zrun = st.open_run(CorrelateZooStudy.name, cfg)
    zrun.start()
    csv = write_csv(rows, zrun.path / "pairs.csv")
    ccfg = CorrelateConfig(path=str(csv), categories={b: zb.ALL_BENCHMARKS[b] for b in cfg.benchmarks},
                           n_boot=cfg.n_boot, seed=cfg.seed)
    # the CSV's rows with the per-item scores a CSV does not carry (calibration; decision accuracy's interval)
    data = harness.load(csv, stages=STAGES, min_models=3)
    data.samples = samples
    result = correlate_run(ccfg, out=zrun.path / "correlate_report.html", data=data)
    summary: dict[str, Any] = {
        "preset": cfg.preset,
        "csv": str(csv),
        "n_rows": len(rows),
        "models": models,
        **bench_info,
        "correlate": result,
        "correlate_report": result["report"],
    }
    summary["run_id"] = zrun.id
    summary["report"] = str(write_report(cfg, rows, models, result, zrun.report_path)) if report else None
    summary["wall_seconds"] = time.perf_counter() - t0
    zrun.finish(summary)
    return summary
