"""The CLI, paused at a known point so a test can kill it there without racing it.

``python -m tests.paused_cli MARKER CHECKPOINTS LOGS -- ARGS...`` runs ``transferlab ARGS`` and, once it has
written CHECKPOINTS checkpoints and then LOGS more metric records, touches MARKER and sleeps until a signal
ends it. A test waits for MARKER (which the run cannot outrun, whatever the machine's load), then sends
SIGKILL or SIGTERM: the interruption lands at the same step on every machine.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(marker: str, checkpoints: int, logs: int, argv: list[str]) -> int:
    from transferlab.cli.main import main as cli_main
    from transferlab.store.run import Run

    seen = {"checkpoints": 0, "logs": 0}
    save, log_many = Run.save_checkpoint, Run.log_many

    def pause_if_due() -> None:
        if seen["checkpoints"] >= checkpoints and seen["logs"] >= logs:
            Path(marker).touch()
            while True:  # until SIGKILL, or SIGTERM (the CLI turns it into an interruption)
                time.sleep(1)

    def counted_save(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        save(self, *args, **kwargs)
        seen["checkpoints"] += 1
        pause_if_due()

    def counted_log(self, records):  # type: ignore[no-untyped-def]
        log_many(self, records)
        if seen["checkpoints"] >= checkpoints:
            seen["logs"] += len(records)
            pause_if_due()

    Run.save_checkpoint = counted_save  # type: ignore[method-assign]
    Run.log_many = counted_log  # type: ignore[method-assign]
    return cli_main(argv)


def wait_for(marker: Path, proc, timeout: float = 300.0) -> None:  # type: ignore[no-untyped-def]
    """Block until the paused CLI reaches its point (it cannot finish before that)."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the paused CLI exited ({proc.returncode}) before its pause point")
        if time.monotonic() > deadline:
            raise AssertionError(f"the paused CLI did not reach its pause point in {timeout:.0f} s")
        time.sleep(0.02)


if __name__ == "__main__":
    marker, ck, logs, sep, *rest = sys.argv[1:]
    assert sep == "--"
    sys.exit(main(marker, int(ck), int(logs), rest))
