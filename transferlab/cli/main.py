"""Entry point: `transferlab ...`. Bad input -> one line on stderr, exit code 2."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import click
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
    cmd = typer.main.get_command(app)
    try:
        cmd.main(args=argv, prog_name="transferlab", standalone_mode=False)
    except TransferlabError as err:
        print(f"error: {err.one_line()}", file=sys.stderr)
        return (2)
    except click.exceptions.Abort:
        print("error: aborted", file=sys.stderr)
        return (130)
    except click.exceptions.NoArgsIsHelpError as err:
        print(err.format_message() if hasattr(err, "format_message") else str(err), file=sys.stderr)
        return (0)
    except click.ClickException as err:
        where = f" ({err.ctx.command_path})" if getattr(err, "ctx", None) else ""
        print(f"error{where}: {err.format_message()} — see --help", file=sys.stderr)
        return (2)
    except click.exceptions.Exit as err:
        return (err.exit_code)
    return (0)


if __name__ == "__main__":
    sys.exit(main())
