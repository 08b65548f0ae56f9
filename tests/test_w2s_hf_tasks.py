"""Weak-to-strong tasks from a Hugging Face dataset saved on disk: hf:PATH[:TEXT_COLUMN:LABEL_COLUMN]."""

from __future__ import annotations

import sys
import zlib

import numpy as np
import pytest
import torch

from transferlab.core.errors import DataError
from transferlab.data.classification import is_user_file, load_task
from transferlab.models import hf_classifier as hfc
from transferlab.studies.w2s.run import make_config, run
from transferlab.studies.w2s.tasks import build_data


@pytest.fixture
def hfds():
    return pytest.importorskip("datasets")


def save(hfds, path, splits=None, **columns):
    """A Dataset (columns given) or a DatasetDict (splits: name -> columns) saved at ``path``."""
    if splits is None:
        hfds.Dataset.from_dict(columns).save_to_disk(str(path))
    else:
        hfds.DatasetDict({k: hfds.Dataset.from_dict(v) for k, v in splits.items()}).save_to_disk(str(path))
    return path


def sciq_rows(lo, hi):
    return {
        "question": [f"question {i}?" for i in range(lo, hi)],
        "correct_answer": [f"right {i}" for i in range(lo, hi)],
        "distractor1": [f"wrong-a {i}" for i in range(lo, hi)],
        "distractor2": [f"wrong-b {i}" for i in range(lo, hi)],
        "distractor3": [f"wrong-c {i}" for i in range(lo, hi)],
        "support": [f"support {i}" for i in range(lo, hi)],
    }


# --------------------------------------------------------------------------- shapes
def test_sciq_gives_one_example_per_question_over_every_split(hfds, tmp_path):
    # stored out of order: the splits are read train, validation, test
    rows = 120
    path = save(hfds, tmp_path / "sciq", splits={"test": sciq_rows(100, rows), "train": sciq_rows(0, 80),
                                                  "validation": sciq_rows(80, 100)})
    d = load_task(f"hf:{path}", seed=5)
    assert d.name == "hf-sciq" and d.classes == ["wrong", "right"] and d.n == rows  # one example per question
    assert 0.35 < d.labels.mean() < 0.65  # a fair coin
    picked = []
    for i in range(rows):
        head, _, ans = d.texts[i].partition("\nA: ")
        assert head == f"Q: question {i}?"
        if d.labels[i]:
            assert ans == f"right {i}"
        else:
            assert ans in {f"wrong-{c} {i}" for c in "abc"}
            picked.append(ans.split()[0])
    assert set(picked) == {"wrong-a", "wrong-b", "wrong-c"}  # every distractor column is drawn from
    assert all("support" not in t for t in d.texts)
    assert load_task(f"hf:{path}", seed=5).texts == d.texts  # seeded: the same draw again
    assert load_task(f"hf:{path}", seed=6).texts != d.texts


def test_sciq_without_support_column_is_recognised(hfds, tmp_path):
    rows = sciq_rows(0, 4)
    del rows["support"]
    d = load_task(f"hf:{save(hfds, tmp_path / 'nosupport', **rows)}", seed=1)
    assert d.n == 4 and set(d.labels.tolist()) == {0, 1}


def test_boolq_is_passage_newline_question_labelled_by_the_answer(hfds, tmp_path):
    answers = [True, False, False, True, True, False, True, True]
    path = save(hfds, tmp_path / "boolq", splits={
        "train": {"question": [f"is {i} ok" for i in range(6)], "passage": [f"passage {i}" for i in range(6)],
                  "answer": answers[:6]},
        "validation": {"question": ["is 6 ok", "is 7 ok"], "passage": ["passage 6", "passage 7"],
                       "answer": answers[6:]},
    })
    d = load_task(f"hf:{path}")
    assert d.classes == ["false", "true"] and d.n == 8
    assert d.labels.tolist() == [int(a) for a in answers]
    assert d.texts == [f"passage {i}\nis {i} ok" for i in range(8)]
    assert d.labels.mean() == pytest.approx(5 / 8)


def test_anthropic_hh_flips_a_seeded_balanced_coin_per_row(hfds, tmp_path):
    n = 400
    path = save(hfds, tmp_path / "hh", chosen=[f"good reply {i}" for i in range(n)],
                rejected=[f"bad reply {i}" for i in range(n)])
    d = load_task(f"hf:{path}", seed=0)
    assert d.classes == ["rejected", "chosen"] and d.n == n  # one example per row
    for i, (t, y) in enumerate(zip(d.texts, d.labels.tolist())):
        assert t == (f"good reply {i}" if y == 1 else f"bad reply {i}")
    assert 0.43 < d.labels.mean() < 0.57  # balanced in expectation (binomial sd 0.025)
    assert np.array_equal(load_task(f"hf:{path}", seed=0).labels, d.labels)
    other = load_task(f"hf:{path}", seed=1).labels
    assert 0.3 < np.mean(other != d.labels) < 0.7  # another seed, independent flips


# --------------------------------------------------------------------------- generic columns
def test_named_columns_with_string_int_bool_and_classlabel_labels(hfds, tmp_path):
    texts = [f"sentence {i}" for i in range(6)]
    s = load_task(f"hf:{save(hfds, tmp_path / 's', sentence=texts, tag=['pos', 'neg', 'pos', 'mid', 'neg', 'pos'])}"
                  ":sentence:tag")
    assert s.classes == ["mid", "neg", "pos"] and s.labels.tolist() == [2, 1, 2, 0, 1, 2] and s.texts == texts
    assert s.description.endswith("text 'sentence', label 'tag'")
    i = load_task(f"hf:{save(hfds, tmp_path / 'i', sentence=texts, y=[5, 0, 2, 10, 2, 0])}:sentence:y")
    assert i.classes == ["0", "2", "5", "10"] and i.labels.tolist() == [2, 0, 1, 3, 1, 0]  # numeric order
    b = load_task(f"hf:{save(hfds, tmp_path / 'b', sentence=texts, ok=[True, False] * 3)}:sentence:ok")
    assert b.classes == ["false", "true"] and b.labels.tolist() == [1, 0] * 3
    feats = hfds.Features({"sentence": hfds.Value("string"), "y": hfds.ClassLabel(names=["zebra", "ant"])})
    hfds.Dataset.from_dict({"sentence": texts, "y": [0, 1, 1, 0, 1, 1]}, features=feats).save_to_disk(
        str(tmp_path / "cl"))
    c = load_task(f"hf:{tmp_path / 'cl'}:sentence:y")
    assert c.classes == ["zebra", "ant"] and c.labels.tolist() == [0, 1, 1, 0, 1, 1]  # the declared names


def test_declared_classes_by_name_and_by_index(hfds, tmp_path):
    texts = [f"t{i}" for i in range(4)]
    by_name = load_task(f"hf:{save(hfds, tmp_path / 'n', x=texts, y=['neg', 'pos', 'pos', 'neg'])}:x:y",
                        classes=["pos", "neg"])
    assert by_name.classes == ["pos", "neg"] and by_name.labels.tolist() == [1, 0, 0, 1]
    by_index = load_task(f"hf:{save(hfds, tmp_path / 'ix', x=texts, y=[1, 0, 0, 1])}:x:y", classes=["no", "yes"])
    assert by_index.classes == ["no", "yes"] and by_index.labels.tolist() == [1, 0, 0, 1]
    with pytest.raises(DataError, match=r"row 2 has label 'maybe' outside the class set \['neg', 'pos'\]"):
        load_task(f"hf:{save(hfds, tmp_path / 'm', x=texts, y=['neg', 'maybe', 'pos', 'neg'])}:x:y",
                  classes=["neg", "pos"])


def test_text_and_label_columns_need_no_naming(hfds, tmp_path):
    path = save(hfds, tmp_path / "tl", splits={"train": {"text": ["a", "b", "c"], "label": [0, 1, 0]},
                                               "test": {"text": ["d"], "label": [1]}})
    d = load_task(f"hf:{path}")
    assert d.texts == ["a", "b", "c", "d"] and d.labels.tolist() == [0, 1, 0, 1] and d.classes == ["0", "1"]


def test_hf_tasks_are_user_data_not_unknown_names(hfds, tmp_path):
    assert is_user_file("hf:/anything") and is_user_file("x.csv") and not is_user_file("stdlib-kind")
    with pytest.raises(DataError, match="unknown task 'nope'") as err:
        load_task("nope")
    assert "hf:PATH" in str(err.value)
    path = save(hfds, tmp_path / "d", sentence=["a", "b", "c", "d"], tag=["x", "y", "y", "x"])
    cfg = make_config(task=f"hf:{path}:sentence:tag", classes=["y", "x"])  # build_data passes the classes
    data = build_data(cfg)
    assert data.classes == ["y", "x"] and data.labels.tolist() == [1, 0, 0, 1]


# --------------------------------------------------------------------------- bad input, one line each
def test_bad_input_raises_one_line_data_errors(hfds, tmp_path):
    good = save(hfds, tmp_path / "good", sentence=["a", "b", "c"], tag=["x", "y", "x"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("not a dataset")
    one = save(hfds, tmp_path / "one", sentence=["a", "b"], tag=["x", "x"])
    odd = save(hfds, tmp_path / "odd", body=["a", "b"], score=[1, 2])
    allyes = save(hfds, tmp_path / "allyes", question=["q1", "q2"], passage=["p1", "p2"], answer=[True, True])
    hfds.Dataset.from_dict({"text": ["a"], "label": [0]}).filter(lambda r: False).save_to_disk(str(tmp_path / "none"))
    nothing = tmp_path / "none"
    cases = [
        (f"hf:{tmp_path / 'missing'}", ["does not exist", "save_to_disk"]),
        (f"hf:{tmp_path / 'missing'}:text:label", ["missing does not exist"]),
        (f"hf:{tmp_path / 'empty'}", ["is not a saved dataset", "save_to_disk"]),
        (f"hf:{tmp_path / 'file.txt'}", ["is not a saved dataset"]),
        (f"hf:{good}:words:tag", ["no column 'words'", "(columns: sentence, tag)"]),
        (f"hf:{good}:sentence:gold", ["no column 'gold'", "(columns: sentence, tag)"]),
        (f"hf:{good}:sentence", ["only one column named", "hf:PATH:TEXT_COLUMN:LABEL_COLUMN"]),
        (f"hf:{odd}", ["no known dataset shape in columns ['body', 'score']", "sciq (", "boolq (",
                       "anthropic_hh (", "hf:PATH:TEXT_COLUMN:LABEL_COLUMN"]),
        (f"hf:{one}:sentence:tag", ["fewer than 2 classes", "['x']"]),
        (f"hf:{allyes}", ["fewer than 2 classes"]),
        (f"hf:{nothing}", ["has no rows"]),
        ("hf:", ["no dataset folder after 'hf:'"]),
    ]
    for task, needles in cases:
        with pytest.raises(DataError) as err:
            load_task(task)
        msg = str(err.value)
        assert "\n" not in msg and " — " in msg, msg  # what/where — fix, on one line
        for needle in needles:
            assert needle in msg, (task, msg)


def test_missing_datasets_package_says_how_to_install(hfds, tmp_path, monkeypatch):
    path = save(hfds, tmp_path / "d", text=["a", "b"], label=[0, 1])
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now raises ImportError
    with pytest.raises(DataError, match=r"`datasets` package is not installed — install it with `pip install "
                                        r"datasets`") as err:
        load_task(f"hf:{path}")
    assert err.value.where == f"hf:{path}"


# --------------------------------------------------------------------------- end to end
VOCAB = [f"w{i}" for i in range(16)]  # w0..w7 vote for "pos", w8..w15 for "neg"
SCALES = [2.0, 1.0, 0.5, 0.0]  # per layer: the noise on the counts (layer 1 is the weak model, 3 the strong)


def fake_encode_layers(seen):
    """Bag-of-words features: the last layer is the clean count vector, earlier layers add noise that is a fixed
    function of the text (so the weak layer's errors are not learnable from the strong features)."""

    def encode(texts, path, max_length=128, batch_size=64):
        seen.append(list(texts))
        out = torch.zeros(len(texts), 4, len(VOCAB))
        for i, t in enumerate(texts):
            counts = torch.zeros(len(VOCAB))
            for w in t.split():
                if w in VOCAB:
                    counts[VOCAB.index(w)] += 1
            g = torch.Generator().manual_seed(zlib.crc32(t.encode()))
            eps = torch.randn(len(VOCAB), generator=g)
            for layer, scale in enumerate(SCALES):
                out[i, layer] = counts + scale * eps
        return out

    return encode


def test_study_runs_end_to_end_on_a_generic_hf_dataset(hfds, store, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    rows: dict[str, list] = {"train": [], "test": []}
    while sum(len(v) for v in rows.values()) < 800:
        words = rng.choice(VOCAB, size=11).tolist()
        score = sum(1 if int(w[1:]) < 8 else -1 for w in words)
        i = sum(len(v) for v in rows.values())
        rows["train" if i < 600 else "test"].append((f"row{i} " + " ".join(words), "pos" if score > 0 else "neg"))
    path = save(hfds, tmp_path / "bow", splits={k: {"sentence": [t for t, _ in v], "sentiment": [y for _, y in v]}
                                                for k, v in rows.items()})
    texts = [t for v in rows.values() for t, _ in v]
    seen: list[list[str]] = []
    monkeypatch.setattr(hfc, "encode_layers", fake_encode_layers(seen))
    cfg = make_config(task=f"hf:{path}:sentence:sentiment", encoder="minilm", losses=["xent"], seeds=3,
                      steps=200, weak_layer=1)
    s = run(cfg, store, write_report=False)
    assert seen == [texts]  # the encoder saw every split's texts, in order
    assert s["task"] == "hf-bow" and s["classes"] == ["neg", "pos"] and s["n_examples"] == 800
    assert s["sizes"] == {"weak_train": 160, "transfer": 320, "val": 80, "test": 240}
    d = s["losses"]["xent"]
    w, c, st = d["weak_acc"]["value"], d["ceiling_acc"]["value"], d["student_acc"]["value"]
    assert c > 0.95 and 0.6 < w < 0.8, (w, c)  # the clean counts separate the classes; the noisy layer does not
    assert d["pgr"]["value"] == pytest.approx((st - w) / (c - w), abs=0.05)
    assert d["pgr"]["value"] > 0.3 and all(v > 0.2 for v in d["pgr_per_seed"]), d  # it averages out the noise
    assert [r["weak_view"] for r in s["sweep"]] == ["layer1", "layer2"]
    feats = store.index.rows(study="w2s-features")
    assert len(feats) == 1 and feats[0]["summary"]["shape"] == [800, 4, len(VOCAB)]
    again = run(cfg, store, write_report=False)  # the same config is reused from the store, not re-embedded
    assert again["reused"] is True and len(seen) == 1
