"""`transferlab zoo build|ls|corpus`: the local model zoo of small causal LMs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import typer

from transferlab.cli.common import (
    ConfigOpt,
    ExplainOpt,
    JsonOpt,
    ListPresetsOpt,
    PrintConfigOpt,
    SetOpt,
    StoreOpt,
    begin,
    config_or_listing,
    emit_json,
    preset_help,
    say,
    store_path,
)

ZooOpt = typer.Option(None, "--zoo", "--out", help="Zoo folder (default: <store>/zoo).")


def register(app: typer.Typer) -> None:
    from transferlab.zoo.build import PRESETS as ZOO_PRESETS

    zoo = typer.Typer(
        help="The local model zoo: six sizes of small Llama LMs trained on Python's prose (docstrings and "
        "comments of the standard library and the installed dependencies) or code.",
        no_args_is_help=True,
        rich_markup_mode="markdown",
    )
    app.add_typer(zoo, name="zoo")

    @zoo.command("build")
    def build(
        preset: str | None = typer.Option(None, "--preset", help="Named preset: " + preset_help(
            SimpleNamespace(presets=ZOO_PRESETS, default_preset="full"))),
        config: Path | None = ConfigOpt,
        sizes: str | None = typer.Option(None, "--sizes", help="Comma-separated sizes: xxs,xs,s,m,l,xl."),
        tokens: int | None = typer.Option(None, "--tokens", help="Training tokens per model (instead of 20/param)."),
        corpus: str | None = typer.Option(
            None, "--corpus", help="prose | code | source | code[sympy] | files:GLOB | hf:PATH[:COL]."),
        out: Path | None = ZooOpt,
        set_: list[str] | None = SetOpt,
        store: Path | None = StoreOpt,
        json_out: bool = JsonOpt,
        print_config: bool = PrintConfigOpt,
        list_presets: bool = ListPresetsOpt,
        explain: bool = ExplainOpt,
    ) -> None:
        """Train (or reuse, or resume) each size; writes models, manifest.json and report.html."""
        from transferlab.zoo.build import PRESETS, ZooConfig, build_zoo

        begin(json_out)
        extra = [f"{k}={v}" for k, v in (("sizes", sizes), ("corpus", corpus)) if v is not None]
        if tokens is not None:
            extra += [f"tokens={tokens}", "tokens_per_param=null"]
        cfg = config_or_listing(ZooConfig, PRESETS, preset=preset, config=config, overrides=(set_ or []) + extra,
                                default_preset="full", list_presets=list_presets, print_config=print_config,
                                explain=explain,
                                json_out=json_out)
        if cfg is None:
            return
        from transferlab.store import Store

        result = build_zoo(cfg, Store(store_path(store)), out)
        if json_out:
            emit_json(result.as_dict())
            return
        for e in result.entries:
            held = " ".join(f"{c}={v:.4f}" for c, v in (e.get("heldout_loss") or {}).items())
            say(
                f"{e['name']:28s} N={e['non_embedding_params']:>9,} tokens={e['tokens_seen']:>11,} "
                f"({e.get('tokens_per_param', 0):.1f}/param, {e.get('dtype')}) held-out {held}"
                f"{'  (reused)' if e.get('reused') else ''}"
            )
        for c, r in result.fit.get("corpora", {}).items():
            f = r.get("fit")
            if f:
                say(f"L(N) on {c}: a = {f['a']:.3f} [{f['a_ci'][0]:.3f}, {f['a_ci'][1]:.3f}], R^2 {f['r2']:.3f}"
                    + ("  FLAGGED: loss does not fall with N" if r["flagged"] else ""))
        typer.echo(str(result.report))

    @zoo.command("ls")
    def ls(
        out: Path | None = ZooOpt,
        store: Path | None = StoreOpt,
        json_out: bool = JsonOpt,
    ) -> None:
        """List the zoo's models from its manifest."""
        from transferlab.zoo.store import Zoo

        begin(json_out)
        root = out if out is not None else store_path(store) / "zoo"
        from transferlab.core.errors import StoreError

        need = ("name", "corpus", "non_embedding_params", "tokens_seen", "val_loss", "path")
        models = Zoo(root).manifest()
        for name, e in models.items():
            missing = [k for k in need if k not in e]
            if missing:
                raise StoreError(f"entry '{name}' lacks {', '.join(missing)}", where=f"zoo manifest {root}",
                                 fix="delete manifest.json; `transferlab zoo build` rewrites it from the runs")
        entries = sorted(models.values(), key=lambda e: (str(e["corpus"]), float(e["non_embedding_params"])))
        if json_out:
            emit_json({"zoo": str(root), "models": entries})
            return
        if not entries:
            say(f"no models in {root} (build some with `transferlab zoo build`)")
            return
        typer.echo(f"{'name':36s} {'corpus':10s} {'N':>10s} {'tokens':>12s} {'val_loss':>8s}  path")
        for e in entries:
            typer.echo(
                f"{e['name']:36s} {str(e.get('corpus')):10s} {e.get('non_embedding_params', 0):>10,} "
                f"{e.get('tokens_seen', 0):>12,} {e.get('val_loss') or float('nan'):>8.4f}  {root / e.get('path', '')}"
            )

    @zoo.command("corpus")
    def corpus_cmd(
        name: str = typer.Argument(..., help="prose | code | source | a part such as code[sympy] or code[^sympy] "
                                   "| files:GLOB | hf:PATH[:COL] | a mixture like prose+code"),
        vocab_size: int = typer.Option(4096, "--vocab-size", help="Tokenizer whose token count to report."),
        val_percent: float = typer.Option(10.0, "--val-percent", help="Percent of files held out."),
        max_files: int | None = typer.Option(None, "--max-files", help="Only the first stdlib files (tests)."),
        out: Path | None = ZooOpt,
        store: Path | None = StoreOpt,
        json_out: bool = JsonOpt,
    ) -> None:
        """Documents, characters (train, validation) and fingerprint of a corpus; tokens once a tokenizer exists."""
        from transferlab.zoo.store import Zoo

        begin(json_out)
        z = Zoo(out if out is not None else store_path(store) / "zoo")
        c = z.corpus(name, val_percent, max_files)
        chars = c.chars()
        res = {"corpus": name, "documents": {"train": len(c.train), "validation": len(c.val)},
               "characters": {"train": chars[0], "validation": chars[1]}, "fingerprint": c.fingerprint,
               "sources": {k: v for k, v in c.info.items() if k in ("python", "distributions", "source")},
               "tokens": None}
        tok_dir = z.tokenizer_dir(vocab_size, ("prose", "code"), val_percent, max_files)
        if (tok_dir / "tokenizer.json").is_file():
            d = z.ensure_tokens(name, tok_dir, val_percent, max_files)
            res["tokens"] = {"train": int(len(d.train)), "validation": int(len(d.val)), "tokenizer": str(tok_dir)}
        if json_out:
            emit_json(res)
            return
        typer.echo(f"{name}: {len(c.train):,} + {len(c.val):,} documents, {chars[0]:,} + {chars[1]:,} characters "
                   f"(train + validation), fingerprint {c.fingerprint}")
        if res["tokens"]:
            typer.echo(f"tokens: {res['tokens']['train']:,} + {res['tokens']['validation']:,}")
