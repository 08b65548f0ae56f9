"""`transferlab eft generate|score`: emulated fine-tuning from local model folders (`eft demo`, the zoo demo study,
is built from its declaration by cli/studies.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from transferlab.cli.common import (
    JsonOpt,
    begin,
    emit_json,
)

BaseOpt = typer.Option(
    ..., "--base", help="The model whose knowledge is kept (e.g. the large pretrained one)."
)
FtOpt = typer.Option(..., "--ft", help="The fine-tuned model (repeat with --ref/--weight to interpolate).")
RefOpt = typer.Option(..., "--ref", help="The base that --ft was tuned from (one per --ft).")
WeightOpt = typer.Option(None, "--weight", help="Weight of each (ft, ref) pair (default: equal).")
BetaOpt = typer.Option(1.0, "--beta", help="Scale of the fine-tuning delta.")
TokOpt = typer.Option(None, "--tokenizer", help="Tokenizer folder (default: the --base folder).")
DeviceOpt = typer.Option(
    "auto", "--device", help="torch device of every model: auto (CUDA when present, else CPU), cpu, cuda, cuda:1, mps."
)
ModelDeviceOpt = typer.Option(
    None, "--model-device", metavar="ROLE=DEVICE",
    help="One model's device, e.g. --model-device base=cuda:0 --model-device ft=cuda:1 (roles: base, ft, ref, "
    "ft1, ref2, ...; repeatable; the others take --device).",
)
DeviceMapOpt = typer.Option(
    None, "--device-map",
    help="Let accelerate place the layers of every model: auto, balanced or sequential (spreads a large model "
    "over the GPUs, then CPU); replaces --device.",
)
DtypeOpt = typer.Option(
    "float32", "--dtype", help="Weights dtype: float32, bfloat16, float16 or auto (the checkpoint's)."
)
AttnOpt = typer.Option(
    None, "--attn-implementation", help="Attention kernel: eager, sdpa or flash_attention_2 (default: the model's)."
)
LoadInOpt = typer.Option(
    None, "--load-in", help="Quantized loading, 8bit or 4bit (needs bitsandbytes and a CUDA GPU)."
)
ChatOpt = typer.Option(
    None, "--chat", metavar="ROLE",
    help="Give this role's model the prompt in its tokenizer's chat template (repeatable; base, ft, ref, ft1, ...). "
    "For a chat fine-tune on plain bases, as proxy-tuning does: --chat ft.",
)
SystemOpt = typer.Option(None, "--system", help="System message for the chat-formatted prompts.")
ReportOpt = typer.Option(None, "--report", help="Write an HTML page with per-token component log-probs.")


def flag(default: bool, name: str, help: str) -> Any:
    """A boolean --name/--no-name switch, shown without a value."""
    return typer.Option(default, f"--{name}/--no-{name}", help=help, metavar="")


NegOpt = flag(False, "allow-negative-beta", "Allow beta < 0 (subtracts the delta).")


def _placement(device: str, model_device: list[str] | None) -> Any:
    from transferlab.eft import EFTError

    if not model_device:
        return device
    out: dict[str, str] = {}
    for item in model_device:
        role, sep, dev = item.partition("=")
        if not sep or not role.strip() or not dev.strip():
            raise EFTError(f"'{item}' is not ROLE=DEVICE", where="--model-device", fix="write e.g. base=cuda:0")
        out[role.strip()] = dev.strip()
    generic = {"base", "ft", "ref"}
    for role in generic - set(out):  # roles left out take --device
        out[role] = device
    return out


def _load(base, ft, ref, weight, beta, allow_neg, tokenizer, device, dtype, *, model_device=None,
          device_map=None, attn=None, load_in=None, chat=None, system=None):
    from transferlab.eft import EFT

    return EFT.from_pretrained(
        base,
        ft,
        ref,
        weights=weight or None,
        beta=beta,
        allow_negative_beta=allow_neg,
        tokenizer=tokenizer,
        device=_placement(device, model_device),
        dtype=dtype,
        device_map=device_map,
        attn_implementation=attn,
        quantization=load_in,
        chat=chat or None,
        system=system,
    )


def read_prompts(prompt: list[str] | None, prompts_file: Path | None) -> list[str]:
    """--prompt texts, then the lines of --prompts-file ('-' = stdin; blank lines skipped; a line that
    is a JSON object gives its "prompt"; a JSON string line gives that string, for prompts with newlines)."""
    import json
    import sys

    from transferlab.eft import EFTError

    out = list(prompt or [])
    if prompts_file is not None:
        name = str(prompts_file)
        if name == "-":
            text = sys.stdin.read()
        else:
            if not prompts_file.is_file():
                what = "is a folder" if prompts_file.is_dir() else "does not exist"
                raise EFTError(f"prompts file '{name}' {what}", where="--prompts-file",
                               fix="pass a text file with one prompt per line, or - for stdin")
            data = prompts_file.read_bytes()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as err:
                kind = "a binary file" if b"\0" in data[:8192] else "not UTF-8 text"
                raise EFTError(f"prompts file '{name}' is {kind} (byte {data[err.start]:#04x} at offset {err.start})",
                               where="--prompts-file", fix="save the prompts as UTF-8 text, one per line") from None
        for n, line in enumerate(text.splitlines(), start=1):
            line = line.rstrip("\r")
            if not line.strip():
                continue
            if line.lstrip().startswith(("{", '"')):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    obj = line
                if isinstance(obj, dict):
                    if not isinstance(obj.get("prompt"), str):
                        raise EFTError(f"line {n} is a JSON object without a \"prompt\" text", where=f"{name}:{n}",
                                       fix='write {"prompt": "..."} or plain text')
                    obj = obj["prompt"]
                line = obj if isinstance(obj, str) else line
            out.append(line)
        if not out:
            raise EFTError(f"prompts file '{name}' holds no prompt (it is empty or blank)", where="--prompts-file",
                           fix="write one prompt per line, or pass --prompt TEXT")
    if not out:
        raise EFTError("no prompt given", where="--prompt/--prompts-file",
                       fix="pass --prompt TEXT (repeatable) or --prompts-file PATH (- for stdin)")
    return out


def _processors(repetition_penalty: float | None, no_repeat_ngram_size: int | None) -> list[Any]:
    from transferlab.eft import EFTError

    procs: list[Any] = []
    if repetition_penalty is not None:
        if not repetition_penalty > 0:
            raise EFTError(f"must be > 0, got {repetition_penalty}", where="--repetition-penalty",
                           fix="pass e.g. 1.2 (1 = off)")
        from transformers import RepetitionPenaltyLogitsProcessor

        procs.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    if no_repeat_ngram_size:
        if no_repeat_ngram_size < 1:
            raise EFTError(f"must be >= 1, got {no_repeat_ngram_size}", where="--no-repeat-ngram-size",
                           fix="pass e.g. 3 (0 = off)")
        from transformers import NoRepeatNGramLogitsProcessor

        procs.append(NoRepeatNGramLogitsProcessor(no_repeat_ngram_size))
    return procs


def generate(
    base: Path = BaseOpt,
    ft: list[Path] = FtOpt,
    ref: list[Path] = RefOpt,
    prompt: list[str] | None = typer.Option(None, "--prompt", help="Prompt text (repeat for a batch)."),
    prompts_file: Path | None = typer.Option(
        None, "--prompts-file",
        help="More prompts, one per line ('-' reads stdin; a JSON line may hold {\"prompt\": ...} or a quoted string).",
    ),
    batch_size: int = typer.Option(16, "--batch-size", help="Prompts decoded together (left padded)."),
    weight: list[float] | None = WeightOpt,
    beta: float = BetaOpt,
    allow_negative_beta: bool = NegOpt,
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", help="Most tokens generated per prompt."),
    greedy: bool = flag(False, "greedy", "Argmax decoding (ignores temperature/top-k/top-p)."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature (> 0)."),
    top_k: int = typer.Option(0, "--top-k", help="Sample from the k most likely tokens (0 = off)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass (1 = off)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the sampler (default: torch's global RNG)."),
    stop: list[str] | None = typer.Option(
        None, "--stop", help="Stop a row when its text contains this string (kept in the output; repeatable)."
    ),
    repetition_penalty: float | None = typer.Option(
        None, "--repetition-penalty", help="transformers' repetition penalty on the EFT log-probs (e.g. 1.2)."
    ),
    no_repeat_ngram_size: int | None = typer.Option(
        None, "--no-repeat-ngram-size", help="Forbid repeating any n-gram of this size."
    ),
    speculative: int = typer.Option(
        0, "--speculative", help="Draft blocks of up to K tokens with --ft, verified exactly (0 = off)."
    ),
    adaptive: bool = flag(
        True, "adaptive", "Adapt the speculative draft length to the acceptance, falling back to plain steps."
    ),
    chat: list[str] | None = ChatOpt,
    system: str | None = SystemOpt,
    tokenizer: Path | None = TokOpt,
    device: str = DeviceOpt,
    model_device: list[str] | None = ModelDeviceOpt,
    device_map: str | None = DeviceMapOpt,
    dtype: str = DtypeOpt,
    attn_implementation: str | None = AttnOpt,
    load_in: str | None = LoadInOpt,
    report: Path | None = ReportOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Generate with emulated fine-tuning: base knowledge + beta * (ft - ref) behaviour."""
    from transferlab.eft import EFTError

    begin(json_out)
    prompts = read_prompts(prompt, prompts_file)
    if batch_size < 1:
        raise EFTError(f"must be >= 1, got {batch_size}", where="--batch-size", fix="pass e.g. 16")
    procs = _processors(repetition_penalty, no_repeat_ngram_size)
    eft = _load(base, ft, ref, weight, beta, allow_negative_beta, tokenizer, device, dtype, model_device=model_device,
                device_map=device_map, attn=attn_implementation, load_in=load_in, chat=chat, system=system)
    results = []
    for i in range(0, len(prompts), batch_size):
        results.append(eft.generate(
            prompts[i : i + batch_size],
            max_new_tokens=max_new_tokens,
            greedy=greedy,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=None if seed is None else seed + i,
            speculative=speculative,
            adaptive=adaptive,
            stop=stop or None,
            logits_processors=procs,
        ))
    result = results[0]
    if len(results) > 1:
        from transferlab.eft import GenerationResult

        stats = {"mode": result.stats.get("mode"), "batches": len(results),
                 "seconds": sum(r.stats.get("seconds", 0.0) for r in results),
                 "new_tokens": sum(r.stats.get("new_tokens", 0) for r in results)}
        stats["tokens_per_s"] = stats["new_tokens"] / stats["seconds"] if stats["seconds"] else None
        result = GenerationResult([g for r in results for g in r.generations], stats)
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
        typer.echo(f"report: {out['report']}")


def score(
    base: Path = BaseOpt,
    ft: list[Path] = FtOpt,
    ref: list[Path] = RefOpt,
    prompt: str = typer.Option(..., "--prompt", help="The context."),
    continuation: list[str] = typer.Option(..., "--continuation", help="Text to score (repeatable)."),
    weight: list[float] | None = WeightOpt,
    beta: float = BetaOpt,
    allow_negative_beta: bool = NegOpt,
    chat: list[str] | None = ChatOpt,
    system: str | None = SystemOpt,
    tokenizer: Path | None = TokOpt,
    device: str = DeviceOpt,
    model_device: list[str] | None = ModelDeviceOpt,
    device_map: str | None = DeviceMapOpt,
    dtype: str = DtypeOpt,
    attn_implementation: str | None = AttnOpt,
    load_in: str | None = LoadInOpt,
    report: Path | None = ReportOpt,
    json_out: bool = JsonOpt,
) -> None:
    """EFT log-likelihood of each continuation after the prompt, per token."""
    begin(json_out)
    eft = _load(base, ft, ref, weight, beta, allow_negative_beta, tokenizer, device, dtype, model_device=model_device,
                device_map=device_map, attn=attn_implementation, load_in=load_in, chat=chat, system=system)
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
        typer.echo(f"report: {out['report']}")


def register(app: typer.Typer) -> None:
    sub = typer.Typer(
        name="eft", help="Emulated fine-tuning (Mitchell et al. 2023) at decoding time.", no_args_is_help=True,
        rich_markup_mode="markdown",
    )
    sub.command("generate")(generate)
    sub.command("score")(score)
    app.add_typer(sub, name="eft")  # `eft demo`, the EFT demo study's command, comes from cli/studies.py
