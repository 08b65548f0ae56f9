"""`transferlab eft generate|score`: JSON contract, parity with the API, the report, bad input -> exit 2."""

from __future__ import annotations

import json

import pytest

from tests.browser import render
from tests.test_eft_tiny import build_trio, make_model, make_tokenizer, one_thread, save  # noqa: F401
from transferlab.eft import EFT


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    return build_trio(tmp_path_factory.mktemp("eft_cli_models"))


def _args(trio, *extra):
    return ["--base", str(trio["base"]), "--ft", str(trio["ft"]), "--ref", str(trio["ref"]), *extra]


def test_generate_json_matches_the_api(cli, trio):
    code, out, err = cli(
        [
            "eft",
            "generate",
            *_args(
                trio,
                "--prompt",
                "the cat sat",
                "--beta",
                "1.5",
                "--max-new-tokens",
                "6",
                "--greedy",
                "--json",
            ),
        ]
    )
    assert code == 0, err
    got = json.loads(out)
    api = EFT.from_pretrained(trio["base"], trio["ft"], trio["ref"], beta=1.5)
    want = api.generate("the cat sat", max_new_tokens=6, greedy=True).generations[0]
    assert got["token_ids"] == want.token_ids and got["text"] == want.text and got["beta"] == 1.5
    assert len(got["generations"][0]["tokens"]) == len(want.token_ids)
    code, out2, _ = cli(
        [
            "eft",
            "generate",
            *_args(
                trio,
                "--prompt",
                "the cat sat",
                "--beta",
                "1.5",
                "--max-new-tokens",
                "6",
                "--greedy",
                "--speculative",
                "3",
                "--json",
            ),
        ]
    )
    assert code == 0 and json.loads(out2)["token_ids"] == want.token_ids
    seeded = [
        "eft",
        "generate",
        *_args(
            trio,
            "--prompt",
            "one",
            "--prompt",
            "a big dog",
            "--seed",
            "3",
            "--temperature",
            "0.8",
            "--top-k",
            "10",
            "--top-p",
            "0.9",
            "--json",
        ),
    ]
    a, b = json.loads(cli(seeded)[1]), json.loads(cli(seeded)[1])
    assert len(a["generations"]) == 2 and a["generations"] == b["generations"]


def test_score_json_and_report_render(cli, trio, tmp_path):
    report = tmp_path / "eft.html"
    code, out, err = cli(
        [
            "eft",
            "score",
            *_args(
                trio,
                "--prompt",
                "the cat",
                "--continuation",
                "sat on a mat",
                "--json",
                "--report",
                str(report),
            ),
        ]
    )
    assert code == 0, err
    got = json.loads(out)
    api = EFT.from_pretrained(trio["base"], trio["ft"], trio["ref"]).score("the cat", "sat on a mat")[0]
    assert got["n_tokens"] == 4 and abs(got["eft_logprob"] - api.eft_logprob) < 1e-5
    assert [t["eft_logprob"] for t in got["tokens"]] == [t.eft_logprob for t in api.tokens]
    page = render(report)
    assert page["figures"] == 1 and page["rendered"] == 1 and page["errors"] == "", page
    html = report.read_text()
    assert "delta changed the argmax" in html and "sat" in html


def test_generate_report_renders(cli, trio, tmp_path):
    report = tmp_path / "gen.html"
    code, _, err = cli(
        [
            "eft",
            "generate",
            *_args(
                trio,
                "--prompt",
                "the cat",
                "--prompt",
                "one two",
                "--max-new-tokens",
                "5",
                "--greedy",
                "--report",
                str(report),
            ),
        ]
    )
    assert code == 0, err
    page = render(report)
    assert page["figures"] == 2 and page["rendered"] == 2 and page["errors"] == "", page


def _error(cli, args):
    code, out, err = cli(args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    return lines[0]


def test_bad_input_gets_one_clear_line(cli, trio, tmp_path):
    msg = _error(
        cli,
        [
            "eft",
            "generate",
            "--base",
            str(tmp_path / "nope"),
            "--ft",
            str(trio["ft"]),
            "--ref",
            str(trio["ref"]),
            "--prompt",
            "x",
        ],
    )
    assert "base model path" in msg and "does not exist" in msg
    other = save(
        make_model(seed=9),
        make_tokenizer(["zz", "yy", "xx"] * 1 + [f"w{i}" for i in range(29)]),
        tmp_path / "other",
    )
    msg = _error(
        cli,
        [
            "eft",
            "generate",
            "--base",
            str(trio["base"]),
            "--ft",
            str(other),
            "--ref",
            str(trio["ref"]),
            "--prompt",
            "the cat",
        ],
    )
    assert "different vocabulary" in msg
    msg = _error(cli, ["eft", "generate", *_args(trio, "--prompt", "the cat", "--beta", "-1")])
    assert "negative beta" in msg and "--allow-negative-beta" in msg
    code, out, err = cli(
        [
            "eft",
            "generate",
            *_args(
                trio,
                "--prompt",
                "the cat",
                "--beta",
                "-1",
                "--allow-negative-beta",
                "--greedy",
                "--max-new-tokens",
                "2",
                "--json",
            ),
        ]
    )
    assert code == 0 and json.loads(out)["beta"] == -1.0
    long = " ".join(["the cat"] * 40)
    msg = _error(cli, ["eft", "generate", *_args(trio, "--prompt", long)])
    assert "longer than the models' context of 64 tokens" in msg
    msg = _error(cli, ["eft", "score", *_args(trio, "--prompt", "the", "--continuation", long, "--json")])
    assert "context of 64" in msg
