"""`transferlab eft generate|score|demo`: emulated fine-tuning from local model folders, and the zoo demo."""

from __future__ import annotations

from pathlib import Path

import typer

from transferlab.cli.common import JsonOpt, SetOpt, StoreOpt, begin, config_or_listing, emit_json, say, store_path

BaseOpt = typer.Option(
    ..., "--base", help="The model whose knowledge is kept (e.g. the large pretrained one)."
)
FtOpt = typer.Option(..., "--ft", help="The fine-tuned model (repeat with --ref/--weight to interpolate).")
RefOpt = typer.Option(..., "--ref", help="The base that --ft was tuned from (one per --ft).")
WeightOpt = typer.Option(None, "--weight", help="Weight of each (ft, ref) pair (default: equal).")
BetaOpt = typer.Option(1.0, "--beta", help="Scale of the fine-tuning delta.")
NegOpt = typer.Option(False, "--allow-negative-beta", help="Allow beta < 0 (subtracts the delta).")
TokOpt = typer.Option(None, "--tokenizer", help="Tokenizer folder (default: the --base folder).")
DeviceOpt = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda.")
DtypeOpt = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16.")
ReportOpt = typer.Option(None, "--report", help="Write an HTML page with per-token component log-probs.")


def _load(base, ft, ref, weight, beta, allow_neg, tokenizer, device, dtype):
    from transferlab.eft import EFT

    return EFT.from_pretrained(
        base,
        ft,
        ref,
        weights=weight or None,
        beta=beta,
        allow_negative_beta=allow_neg,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
    )


def generate(
    base: Path = BaseOpt,
    ft: list[Path] = FtOpt,
    ref: list[Path] = RefOpt,
    prompt: list[str] = typer.Option(..., "--prompt", help="Prompt text (repeat for a batch)."),
    weight: list[float] | None = WeightOpt,
    beta: float = BetaOpt,
    allow_negative_beta: bool = NegOpt,
    max_new_tokens: int = typer.Option(32, "--max-new-tokens"),
    greedy: bool = typer.Option(False, "--greedy", help="Argmax decoding (ignores temperature/top-k/top-p)."),
    temperature: float = typer.Option(1.0, "--temperature"),
    top_k: int = typer.Option(0, "--top-k"),
    top_p: float = typer.Option(1.0, "--top-p"),
    seed: int | None = typer.Option(None, "--seed"),
    speculative: int = typer.Option(0, "--speculative", help="Draft blocks of K tokens with --ft (0 = off)."),
    tokenizer: Path | None = TokOpt,
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
    report: Path | None = ReportOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Generate with emulated fine-tuning: base knowledge + beta * (ft - ref) behaviour."""
    begin(json_out)
    eft = _load(base, ft, ref, weight, beta, allow_negative_beta, tokenizer, device, dtype)
    result = eft.generate(
        prompt,
        max_new_tokens=max_new_tokens,
        greedy=greedy,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        speculative=speculative,
    )
    out = result.to_dict()
    out["beta"] = eft.beta
    if report is not None:
        from transferlab.eft.report import write_report

        items = [(f"prompt: {g.prompt!r} -> {g.text!r}", g.tokens) for g in result.generations]
        out["report"] = str(write_report(report, "generate", items, {"beta": eft.beta, **result.stats}))
    if json_out:
        emit_json(out)
        return
    for g in result.generations:
        typer.echo(g.prompt + " " + g.text if len(result.generations) > 1 else g.text)
    if report is not None:
        say(f"report: {out['report']}")


def score(
    base: Path = BaseOpt,
    ft: list[Path] = FtOpt,
    ref: list[Path] = RefOpt,
    prompt: str = typer.Option(..., "--prompt", help="The context."),
    continuation: list[str] = typer.Option(..., "--continuation", help="Text to score (repeatable)."),
    weight: list[float] | None = WeightOpt,
    beta: float = BetaOpt,
    allow_negative_beta: bool = NegOpt,
    tokenizer: Path | None = TokOpt,
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
    report: Path | None = ReportOpt,
    json_out: bool = JsonOpt,
) -> None:
    """EFT log-likelihood of each continuation after the prompt, per token."""
    begin(json_out)
    eft = _load(base, ft, ref, weight, beta, allow_negative_beta, tokenizer, device, dtype)
    scores = eft.score(prompt, continuation)
    out: dict = {"beta": eft.beta}
    if len(scores) == 1:
        out.update(scores[0].to_dict())
    out["scores"] = [s.to_dict() for s in scores]
    if report is not None:
        from transferlab.eft.report import write_report

        items = [
            (f"{s.prompt!r} + {s.continuation!r}: EFT log-prob {s.eft_logprob:.4f}", s.tokens) for s in scores
        ]
        out["report"] = str(write_report(report, "score", items, {"beta": eft.beta, "prompt": prompt}))
    if json_out:
        emit_json(out)
        return
    for s in scores:
        typer.echo(f"{s.eft_logprob:.4f}\t(base {s.base_logprob:.4f})\t{s.continuation}")
    if report is not None:
        say(f"report: {out['report']}")


def demo(
    preset: str | None = typer.Option(None, "--preset", help="default | micro (see --list-presets)."),
    config: Path | None = typer.Option(None, "--config", help="YAML file of config keys."),
    set_: list[str] | None = SetOpt,
    zoo: Path | None = typer.Option(None, "--zoo", help="Zoo folder (default: <store>/zoo)."),
    store: Path | None = StoreOpt,
    json_out: bool = JsonOpt,
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
    list_presets: bool = typer.Option(False, "--list-presets", help="List the presets and exit."),
) -> None:
    """The zoo demo: small-ft, large-ft, up- and down-scaled EFT on target and source held-out loss."""
    from transferlab.eft.demo import PRESETS, EFTDemoConfig

    begin(json_out)
    cfg = config_or_listing(EFTDemoConfig, PRESETS, preset=preset, config=config, overrides=set_,
                            default_preset="default", list_presets=list_presets, print_config=print_config,
                            json_out=json_out)
    if cfg is None:
        return
    from transferlab.eft.demo import run_zoo_demo
    from transferlab.store import Store

    summary = run_zoo_demo(cfg, Store(store_path(store)), zoo)
    if json_out:
        emit_json(summary)
        return
    width = max(len(r["label"]) for r in summary["table"])
    say(f"{'model':{width}s}  target ({summary['target_corpus']})  source ({summary['source_corpus']})")
    for r in summary["table"]:
        say(f"{r['label']:{width}s}  {r['target_loss']:>14.4f}  {r['source_loss']:>14.4f}")
    g = summary["gap"]["target"]
    frac = g["up_fraction_closed"]
    if frac is None:
        say("large-ft is not better than small-ft on the target: no gap for up-scaling to close")
    else:
        ci = g["up_fraction_ci95"]
        ci_txt = "" if ci is None else f" (95% interval {ci[0]:.3f} to {ci[1]:.3f})"
        verdict = "met" if summary["target_met"] else "missed"
        say(
            f"up-scaling closes {frac:.3f}{ci_txt} of the small-ft -> large-ft gap on the target "
            f"(target >= {summary['target_fraction']:g}: {verdict})"
        )
    typer.echo(summary["report"])


def register(app: typer.Typer) -> None:
    sub = typer.Typer(
        name="eft", help="Emulated fine-tuning (Mitchell et al. 2023) at decoding time.", no_args_is_help=True
    )
    sub.command("generate")(generate)
    sub.command("score")(score)
    sub.command("demo")(demo)
    app.add_typer(sub, name="eft")
