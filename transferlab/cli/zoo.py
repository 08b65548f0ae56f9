"""`transferlab zoo build|ls`: the local model zoo of small causal LMs."""

from __future__ import annotations

from pathlib import Path

import typer

from transferlab.cli.common import JsonOpt, SetOpt, StoreOpt, begin, emit_json, say, store_path

OutOpt = typer.Option(None, "--out", help="Zoo folder (default: <store>/zoo).")


def register(app: typer.Typer) -> None:
    zoo = typer.Typer(
        help="The local model zoo: small Llama-style LMs trained on the stdlib's prose or code.",
        no_args_is_help=True,
    )
    app.add_typer(zoo, name="zoo")

    @zoo.command("build")
    def build(
        sizes: str | None = typer.Option(None, "--sizes", help="Comma-separated sizes: xxs,xs,s,m,l,xl."),
        tokens: int | None = typer.Option(None, "--tokens", help="Training tokens per model."),
        corpus: str | None = typer.Option(
            None, "--corpus", help="prose | code | files:GLOB | hf:PATH[:COL]."
        ),
        out: Path | None = OutOpt,
        set_: list[str] | None = SetOpt,
        store: Path | None = StoreOpt,
        json_out: bool = JsonOpt,
    ) -> None:
        """Train (or reuse, or resume) each size; writes models, manifest.json and report.html."""
        from transferlab.core.config import resolve
        from transferlab.store import Store
        from transferlab.studies.transfer.zoo_build import build_zoo
        from transferlab.studies.transfer.zoo_config import ZooConfig

        begin(json_out)
        extra = {k: v for k, v in (("sizes", sizes), ("tokens", tokens), ("corpus", corpus)) if v is not None}
        cfg = resolve(ZooConfig, overrides=set_, extra=extra)
        st = Store(store_path(store))
        result = build_zoo(cfg, st, out)
        if json_out:
            emit_json(result.as_dict())
            return
        for e in result.entries:
            say(
                f"{e['name']:28s} N={e['non_embedding_params']:>9,} tokens={e['tokens_seen']:>10,} "
                f"val_loss={e['val_loss']:.4f}{'  (reused)' if e.get('reused') else ''}"
            )
        typer.echo(str(result.report))

    @zoo.command("ls")
    def ls(
        out: Path | None = OutOpt,
        store: Path | None = StoreOpt,
        json_out: bool = JsonOpt,
    ) -> None:
        """List the zoo's models from its manifest."""
        from transferlab.models.zoo import Zoo

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
        for e in entries:
            typer.echo(
                f"{e['name']:28s} {e['corpus']:8s} N={e['non_embedding_params']:>9,} "
                f"tokens={e['tokens_seen']:>10,} val_loss={e['val_loss']:.4f}  {root / e['path']}"
            )
