"""Where and in which precision a model trains: ``auto`` | ``cpu`` | ``cuda``, and bf16 where it pays.

``auto`` picks CUDA when a GPU is present, else the CPU. bfloat16 autocast (matmuls in bf16, parameters
and the optimizer's state in float32, the master copy) is used on CUDA GPUs that support it and on CPUs
with native bf16 dot products (AVX-512 BF16 or AMX: there a bf16 matmul ran at 2.2x the fp32 rate on
2 cores); elsewhere it falls back to float32, where bf16 would be emulated and slower.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch

from transferlab.core.errors import ConfigError, TransferlabError

Device = Literal["auto", "cpu", "cuda"]
DType = Literal["auto", "bfloat16", "float32"]
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "bfloat16", "float32")
Compile = Literal["auto"] | bool
# ``compile=auto`` compiles a run of at least this many steps: compiling costs ~5-20 s on 2 cores and
# then ran the zoo's bf16 training step 2.2-2.5x faster (sizes m-xl); shorter runs stay eager
COMPILE_MIN_STEPS = 300


def resolve_device(device: str | torch.device | None, where: str = "device", *, role: str | None = None,
                   auto_mps: bool = False, error: type[TransferlabError] = ConfigError) -> torch.device:
    """The one device resolver of the project. ``auto`` (or None) picks CUDA when torch sees a GPU, else (with
    ``auto_mps``, as the Hugging Face loaders do) an Apple GPU, else the CPU; ``cpu``, ``cuda``, ``cuda:N`` and
    ``mps`` are checked against what torch sees, with one clear ``error`` (naming ``role``'s model if given)."""
    name = "auto" if device is None else str(device)
    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if auto_mps and has_mps else "cpu")
    who = f" the {role} model" if role else ""
    cpu_hint = f"{where} cpu" if where.startswith("--") else f"{where}=cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise error(f"'{name}' is not a torch device", where=where, fix="use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise error(
                f"device '{name}' was asked for{who} but torch {torch.__version__} sees no CUDA GPU (a CPU build of "
                "torch, or no GPU on this machine)", where=where,
                fix=f"use {cpu_hint} (or auto), or install a CUDA build of torch on a machine with a GPU",
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise error(f"device '{name}' was asked for{who} but torch sees {torch.cuda.device_count()} GPU(s)",
                        where=where, fix=f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    elif dev.type == "mps":
        if not has_mps:
            raise error(f"device '{name}' was asked for{who} but torch sees no Apple GPU", where=where,
                        fix=f"use {cpu_hint} (or auto)")
    elif dev.type != "cpu":
        raise error(f"unknown device '{name}'", where=where, fix="use auto, cpu, cuda, cuda:N or mps")
    return dev


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 dot products (Linux: the avx512_bf16 or amx_bf16 flags)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        pass
    return False


def resolve_dtype(dtype: str, device: torch.device, where: str = "dtype") -> torch.dtype:
    """The autocast dtype: ``auto`` is bfloat16 where the hardware has it (see the module docstring)."""
    if dtype == "float32":
        return torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype '{dtype}'", where=where, fix="use auto, bfloat16 or float32")
    native = cpu_has_bf16() if device.type == "cpu" else (
        device.type == "cuda" and torch.cuda.is_bf16_supported())
    if dtype == "bfloat16" or native:
        return torch.bfloat16
    return torch.float32


def autocast(device: torch.device, dtype: torch.dtype) -> torch.autocast:
    """``torch.autocast`` for a training dtype (disabled for float32)."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def compile_available(device: torch.device) -> tuple[bool, str]:
    """Whether ``torch.compile`` (Inductor) can build kernels for ``device`` here, and if not why: on the CPU
    it needs a C++ compiler, on CUDA Triton."""
    if device.type == "cpu":
        if any(shutil.which(c) for c in ("g++", "c++", "clang++")):
            return True, ""
        return False, "Inductor needs a C++ compiler on the CPU and none (g++, c++, clang++) is on PATH"
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False, "Inductor needs Triton on CUDA and it is not installed"
        return True, ""
    return False, f"no compiled path for device '{device.type}'"


def resolve_compile(setting: bool | str, device: torch.device, steps: int, where: str = "compile") -> bool:
    """Whether a run trains through ``torch.compile``: ``auto`` when it can here and the run is long enough
    to pay for the compilation (``COMPILE_MIN_STEPS``); ``True`` insists (one clear error where it cannot)."""
    if setting is False:
        return False
    if setting not in (True, "auto"):
        raise ConfigError(f"unknown compile setting '{setting}'", where=where, fix="use auto, true or false")
    ok, why = compile_available(device)
    if setting is True:
        if not ok:
            raise ConfigError(f"torch.compile was asked for but cannot run here: {why}", where=where,
                              fix="use compile=auto (compiles where it can) or compile=false")
        return True
    return ok and steps >= COMPILE_MIN_STEPS


# a training step under this many FLOPs runs on 1 thread: intra-op threads then cost more than they save
# (on a busy 2-core machine 2 threads ran ~100x slower than 1 on a 13k-parameter LM, and 3-6x slower on the
# grokking default)
SMALL_STEP_FLOPS = 2e9


def threads_for(flops_per_step: float, requested: int | None = None) -> int:
    """CPU threads for a training step of ``flops_per_step`` (forward + backward): ``requested`` when given,
    1 for a small step, else all of torch's threads."""
    if requested:
        return requested
    return 1 if flops_per_step < SMALL_STEP_FLOPS else torch.get_num_threads()


@contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """torch's intra-op threads set to ``n`` (None or 0: left as they are) inside the block, restored after;
    yields the count in force."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
