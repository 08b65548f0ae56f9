"""`transferlab fit chinchilla FILE.csv` and `transferlab fit transfer FILE.csv`: laws on your runs."""

from __future__ import annotations

from pathlib import Path

import typer

from transferlab.cli.common import (
    ConfigOpt,
    JsonOpt,
    SetOpt,
    StoreOpt,
    begin,
    check_paths,
    emit_json,
    say,
    show,
    store_path,
)
from transferlab.core.config import resolve
from transferlab.core.errors import ConfigError
from transferlab.fit.extrapolation import fmt, fmt_factor

BootOpt = typer.Option(
    None, "--bootstrap", help="Bootstrap refits for the 95% intervals (default 1000; 0: none)."
)
SeedOpt = typer.Option(None, "--seed", help="Seed of the bootstrap resamples (default 0).")
ReportOpt = typer.Option(None, "--report", help="Where to write the HTML report (default: the run folder).")


def _fmt_ci(ci: list) -> str:
    if not ci or ci[0] is None or ci[0] != ci[0]:
        return ""
    return f"  [{ci[0]:.4g}, {ci[1]:.4g}]"


def _pairs(items: list[str], flag: str) -> dict[str, float]:
    out = {}
    for item in items:
        key, sep, val = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[key.strip()] = float(val)
        except ValueError:
            raise ConfigError(
                f"{flag} '{item}' is not NAME=NUMBER", fix=f"write it as {flag} E=1.7"
            ) from None
    return out


def _plans(items: list[str]) -> list[tuple[float, float]]:
    out = []
    for item in items:
        loss, sep, n = item.partition("@")
        try:
            if not sep:
                raise ValueError
            out.append((float(loss), float(n)))
        except ValueError:
            raise ConfigError(f"--plan '{item}' is not LOSS@N", fix="write it as --plan 2.5@1e7") from None
    return out


def _beyond_tag(ex: dict) -> str:
    """' (beyond the data: C 772x above)' for a sizing answer outside the data's range, else ''."""
    if not ex.get("outside"):
        return ""
    parts = [f"{k} {fmt_factor(ex[k]['factor'])} {ex[k]['side']}" for k in ("C", "N", "D") if ex[k]["side"]]
    return f"  [yellow](beyond the data: {', '.join(parts)})[/yellow]"


def _ci(ci: list | None) -> str:
    if not ci or ci[0] is None or ci[0] != ci[0]:
        return ""
    return f" [{fmt(ci[0])}, {fmt(ci[1])}]"


def _say_sizing(out: dict) -> None:
    show("[bold]compute-optimal[/bold] (C = 6ND; 95% intervals)")
    for b in out["compute_optimal"]["budgets"]:
        show(
            f"  C {fmt(b['C'])}: N_opt {fmt(b['N_opt'])}{_ci(b['N_opt_ci'])}, D_opt {fmt(b['D_opt'])}"
            f"{_ci(b['D_opt_ci'])}, {b['tokens_per_param']:.3g}{_ci(b['tokens_per_param_ci'])} tokens/param"
            f"{_beyond_tag(b['extrapolation'])}"
        )
    ot = out["overtrain"]
    if ot["plans"]:
        show(f"[bold]over-training[/bold] to loss {ot['target_loss']:.4g} (least training + inference FLOPs)")
        for p in ot["plans"]:
            miss = p.get("unreachable_resamples")
            show(
                f"  {fmt(p['inference_tokens'])} inference tokens: N {fmt(p['N'])}{_ci(p.get('N_ci'))}, "
                f"D {fmt(p['D'])}{_ci(p.get('D_ci'))}, saving {100 * p['saving']:.1f}%"
                + (f" (target out of reach in {miss} resamples)" if miss else "")
                + _beyond_tag(p["extrapolation"])
            )
    sens = out.get("sensitivity")
    if sens:
        rows = ", ".join(str(p["row"]) for p in sens["points"])
        which = (
            f"the most influential point by {sens['by']} (data row {rows})"
            if sens["k"] == 1
            else f"the 1..{sens['k']} most influential points by {sens['by']} (data rows {rows}, in that order)"
        )
        show(f"[bold]sensitivity[/bold]: refits leaving out {which}")
        for m in sens["tokens_per_param"]:
            show(
                f"  tokens/param at {fmt(m['C'])} FLOPs: {m['tokens_per_param']:.3g} -> {m['min']:.3g} to "
                f"{m['max']:.3g}"
            )
        show(
            "  "
            + ", ".join(
                f"{name} {v['full']:.4g} -> {v['min']:.4g}..{v['max']:.4g}"
                for name, v in sens["parameters"].items()
                if v["min"] == v["min"]
            )
        )


def register(app: typer.Typer) -> None:
    fit_app = typer.Typer(help="Fit scaling laws to your own runs (a CSV file).", no_args_is_help=True,
                        rich_markup_mode="markdown")

    @fit_app.command("chinchilla")
    def chinchilla(
        file: Path = typer.Argument(..., help="CSV with columns N, D (or C = training FLOPs) and loss."),
        bootstrap: int | None = BootOpt,
        seed: int | None = SeedOpt,
        drop_highest_loss: int | None = typer.Option(
            None,
            "--drop-highest-loss",
            help="Leave out the K highest-loss points (Epoch AI: 5 on their data).",
        ),
        max_iter: int | None = typer.Option(None, "--max-iter", help="L-BFGS iterations per start (1000)."),
        budget: list[float] | None = typer.Option(
            None, "--budget", help="Training FLOPs for the compute-optimal table (repeatable)."
        ),
        target_loss: float | None = typer.Option(
            None, "--target-loss", help="Loss target of the over-training table."
        ),
        inference_tokens: list[float] | None = typer.Option(
            None, "--inference-tokens", help="Inference tokens for the over-training table (repeatable)."
        ),
        sensitivity: int | None = typer.Option(
            None,
            "--sensitivity",
            help="Refit with the 1..K most influential points left out and show how the fit and the "
            "sizing move (default: 2% of the points, 1 to 5; 0: skip).",
        ),
        sensitivity_by: str | None = typer.Option(
            None,
            "--sensitivity-by",
            help="How those points are chosen: influence (Cook's distance from exact leave-one-out "
            "refits; default) or residual (largest |log L - log L_fit|).",
        ),
        report: Path | None = ReportOpt,
        config: Path | None = ConfigOpt,
        set_: list[str] | None = SetOpt,
        store: Path | None = StoreOpt,
        json_out: bool = JsonOpt,
    ) -> None:
        """Fit L(N, D) = E + A/N^alpha + B/D^beta (Epoch's Huber fit), compute-optimal sizes, over-training.

        Answers beyond the data's range (compute, N, D, target loss) are flagged with how far beyond;
        the over-training plans carry the bootstrap's 95% intervals; the sensitivity table refits
        without the most influential points.
        """
        begin(json_out)
        from transferlab.studies.transfer import ChinchillaFitConfig, fit_chinchilla_csv

        extra: dict = {"file": str(file)}
        for key, val in (
            ("bootstrap", bootstrap),
            ("seed", seed),
            ("drop_highest_loss", drop_highest_loss),
            ("max_iter", max_iter),
            ("target_loss", target_loss),
            ("sensitivity", sensitivity),
            ("sensitivity_by", sensitivity_by),
        ):
            if val is not None:
                extra[key] = val
        if budget:
            extra["budgets"] = list(budget)
        if inference_tokens:
            extra["inference_tokens"] = list(inference_tokens)
        cfg = resolve(ChinchillaFitConfig, config_file=config, overrides=set_, extra=extra)
        check_paths(store, report, "--report")
        out = fit_chinchilla_csv(cfg, store=store_path(store), out=report)
        if json_out:
            emit_json(out)
            return
        show(f"[bold]L(N, D) = E + A/N^alpha + B/D^beta[/bold] on {out['n_points']} points")
        for k in ("E", "A", "B", "alpha", "beta"):
            show(f"  {k:<6} {out[k]:.4g}{_fmt_ci(out[k + '_ci'])}")
        co = out["compute_optimal"]
        show(f"  N_opt ∝ C^{co['N_opt_exponent']:.3f}, D_opt ∝ C^{co['D_opt_exponent']:.3f}")
        _say_sizing(out)
        for w in out["warnings"]:
            say(f"[red]warning:[/red] {w}")
        typer.echo(f"report: {out['report']}")

    @fit_app.command("transfer")
    def transfer(
        file: Path = typer.Argument(..., help="CSV with columns kind (scratch|finetune), N, D and loss."),
        bootstrap: int | None = BootOpt,
        seed: int | None = SeedOpt,
        fix: list[str] | None = typer.Option(
            None,
            "--fix",
            help="Hold a scratch-law parameter fixed, e.g. --fix E=1.7 (repeatable; E, A, B, alpha, beta).",
        ),
        fix_beta: float | None = typer.Option(
            None,
            "--fix-beta",
            help="Hold the N exponent beta fixed (needed when all fine-tuning runs have one size).",
        ),
        plan: list[str] | None = typer.Option(
            None, "--plan", help="Planner question LOSS@N, e.g. --plan 2.5@1e7 (repeatable)."
        ),
        report: Path | None = ReportOpt,
        config: Path | None = ConfigOpt,
        set_: list[str] | None = SetOpt,
        store: Path | None = StoreOpt,
        json_out: bool = JsonOpt,
    ) -> None:
        """Effective data transferred: D_T = k D_F^alpha N^beta (Hernandez et al. 2021), with a planner."""
        begin(json_out)
        from transferlab.studies.transfer import TransferFitConfig, fit_transfer_csv

        extra: dict = {"file": str(file)}
        for key, val in (("bootstrap", bootstrap), ("seed", seed), ("fix_beta", fix_beta)):
            if val is not None:
                extra[key] = val
        if fix:
            extra["fix"] = _pairs(fix, "--fix")
        if plan:
            extra["plan"] = _plans(plan)
        cfg = resolve(TransferFitConfig, config_file=config, overrides=set_, extra=extra)
        check_paths(store, report, "--report")
        out = fit_transfer_csv(cfg, store=store_path(store), out=report)
        if json_out:
            emit_json(out)
            return
        show(
            f"[bold]D_T = k D_F^alpha N^beta[/bold] on {out['n_used']} of {out['n_finetune']} "
            "fine-tuning runs "
            "(alpha: D_F exponent, beta: N exponent; the textbook swaps the names)"
        )
        for label, t in (("least squares", out["ols"]), ("Huber", out["robust"])):
            show(
                f"  {label:<14} k {t['k']:.4g}{_fmt_ci(t['k_ci'])}  "
                f"alpha {t['alpha']:.3f}{_fmt_ci(t['alpha_ci'])}"
                f"  beta {t['beta']:.3f}{_fmt_ci(t['beta_ci'])}"
            )
        b = out["bootstrap"]
        if b["resamples"]:
            show(f"  intervals: {b['method']} bootstrap, {b['fitted']} of {b['resamples']} resamples fitted")
        for w in out["warnings"]:
            say(f"[red]warning:[/red] {w}")
        typer.echo(f"report: {out['report']}")

    app.add_typer(fit_app, name="fit")
