"""Entry point: `transferlab ...`. Bad input -> one line on stderr, exit code 2."""

from __future__ import annotations

import errno
import importlib
import os
import pkgutil
import signal
import sys
import traceback

import typer

from transferlab.core.errors import TransferlabError

app = typer.Typer(
    name="transferlab",
    help="A lab for how pretraining knowledge transfers and generalizes.",
    no_args_is_help=True,
    rich_markup_mode="markdown",  # rich markup mode would swallow "transferlab[tensorboard]" in help
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from transferlab import __version__

        typer.echo(f"transferlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """A lab for how pretraining knowledge transfers and generalizes."""


def _register_commands() -> None:
    import transferlab.cli as pkg

    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if mod.name in {"main", "common"}:
            continue
        module = importlib.import_module(f"transferlab.cli.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)
    sync_studies()


def sync_studies() -> None:
    """Every registered study's command, built from its declaration (studies registered at run time too)."""
    from transferlab.cli.studies import sync

    sync(app)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2 for bad input, with one line on stderr)."""
    from transferlab.store.run import forget_open_runs

    forget_open_runs()
    sync_studies()
    cmd = typer.main.get_command(app)
    previous = _on_sigterm_interrupt()
    try:
        rv = cmd.main(args=argv, prog_name="transferlab", standalone_mode=False)
        if isinstance(rv, int) and not isinstance(rv, bool) and rv != 0:  # typer turns Ctrl-C into Exit(130)
            return _fail("interrupted", 130, status="interrupted") if rv == 130 else rv
    except TransferlabError as err:
        return _fail(err.one_line(), err.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130, status="interrupted")
    except MemoryError:
        return _fail("out of memory — use a smaller config (see the memory cap in docs/ARCHITECTURE.md)", 2)
    except OSError as err:  # a path the user gave: missing, a folder, unwritable, full disk
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            full = err.errno != errno.EROFS
            return _fail(f"{where}{'the disk is full' if full else 'read-only file system'} — "
                         + ("free some space and rerun: finished runs are kept and unfinished ones resume from "
                            "their last intact checkpoint" if full else "pass a writable --store or output path"), 2)
        return _fail(f"{where}{err.strerror or err} — check the path exists, is the right kind (file or folder) "
                     "and that you may write there", 2)
    except Exception as err:  # click's exceptions (typer may vendor its own copy of click)
        code = _click_exit(err)
        if code is not None:
            return code
        if os.environ.get("TRANSFERLAB_TRACEBACK"):
            traceback.print_exc()
        msg = " ".join(f"{type(err).__name__}: {err}".split())
        return _fail(f"internal error ({msg[:300]}) — this is a bug; rerun with TRANSFERLAB_TRACEBACK=1 "
                     "and report it", 1)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _on_sigterm_interrupt():  # type: ignore[no-untyped-def]
    """A scheduler's SIGTERM ends the command as Ctrl-C does: its unfinished runs are marked interrupted."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _fail(line: str, code: int, status: str = "failed") -> int:
    """One line on stderr; every run this process opened and did not finish is marked with the reason."""
    from transferlab.store.run import abandon_open_runs

    abandon_open_runs(line, status=status)
    print(f"error: {line}", file=sys.stderr)
    return code


def _click_exit(err: Exception) -> int | None:
    """The exit code of click's own exceptions; None for anything else."""
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
        msg = " ".join(err.format_message().split())  # type: ignore[attr-defined]
        print(f"error{where}: {msg} — see --help", file=sys.stderr)
        return 2
    return None


if __name__ == "__main__":
    sys.exit(main())
