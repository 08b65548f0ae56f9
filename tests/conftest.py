"""Shared fixtures. Every test runs offline (HF_HUB_OFFLINE=1) on a fresh store in tmp_path."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def store(tmp_path):
    from transferlab.store import Store

    return Store(tmp_path / "runs")


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: cli(["grok", "--json"]) -> (exit_code, stdout, stderr)."""
    from transferlab.cli.main import main

    def run(args: list[str]) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run
