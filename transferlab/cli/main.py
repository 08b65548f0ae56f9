"""Entry point: `transferlab ...`. Bad input -> one line on stderr, exit code 2."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from transferlab.core.errors import TransferlabError

app = typer.Typer(
    name="transferlab",
    help="A lab for how pretraining knowledge transfers and generalizes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_commands() -> None:
    import transferlab.cli as pkg

    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if mod.name in {"main", "common"}:
            continue
        module = importlib.import_module(f"transferlab.cli.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2 for bad input, with one line on stderr)."""
    cmd = typer.main.get_command(app)
    try:
        rv = cmd.main(args=argv, prog_name="transferlab", standalone_mode=False)
        if isinstance(rv, int) and not isinstance(rv, bool):  # click returns an Exit's code here
            return rv
    except TransferlabError as err:
        print(f"error: {err.one_line()}", file=sys.stderr)
        return 2
    except Exception as err:  # click's exceptions (typer may vendor its own copy of click)
        return _click_exit(err)
    return 0


def _click_exit(err: Exception) -> int:
    name = type(err).__name__
    if name == "Abort":
        print("error: aborted", file=sys.stderr)
        return 130
    if name == "Exit":
        return int(getattr(err, "exit_code", 0) or 0)
    if name == "NoArgsIsHelpError":
        print(err.format_message(), file=sys.stderr)  # type: ignore[attr-defined]
        return 0
    if hasattr(err, "format_message") and hasattr(err, "exit_code"):  # a usage error
        ctx = getattr(err, "ctx", None)
        where = f" ({ctx.command_path})" if ctx is not None else ""
        print(f"error{where}: {err.format_message()} — see --help", file=sys.stderr)  # type: ignore[attr-defined]
        return 2
    raise err


if __name__ == "__main__":
    sys.exit(main())
