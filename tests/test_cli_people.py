"""The command line of a person with unlabelled images: `query` (table, batch file, contact sheet), `label`
(--labels from a filled-in batch file, --skip, --relabel, --remove), `status`, and bad inputs that change
nothing.

The images are real Fashion-MNIST trousers and bags written as PNG files and listed in an `image-csv`
file; 16 of the 40 have a label (test, validation and the initial 8), the 24 in the pool have none. The
run is created once through the CLI (one epoch); each test works on its own copy of the run folder.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_helpers import run_cli
from activelab.cli import WIDTH, _batch_table, main
from activelab.sheet import PAD, THUMB, cell_size, contact_sheet, display_pixels, sheet_size

CLASSES = {1: "trouser", 8: "bag"}  # Fashion-MNIST class index -> the class name in the listing
PER_CLASS, LABELLED_PER_CLASS = 20, 8
RUN = ["--data-class", "image-csv", "--n-train-images", "8", "--al-iter", "0", "--max-epochs", "1", "--min-steps", "0", "--n-val", "4",
       "--n-test", "4", "--n-holdout", "0", "--batch-size", "8", "--quiet", "--run-name", "r"]


def class_of(item: int) -> str:
    """The true class of listing row ``item`` (rows alternate trouser, bag)."""
    return "trouser" if item % 2 == 0 else "bag"


def write_listing(folder: Path, fashion) -> Path:
    """40 PNG files (20 trousers, 20 bags) and images.csv listing them; only the first 8 of each are labelled."""
    (folder / "img").mkdir(parents=True)
    picked = {label: np.flatnonzero(fashion.labels[:3000] == label)[:PER_CLASS] for label in CLASSES}
    rows = ["path,label"]
    for index in range(PER_CLASS):
        for label, name in CLASSES.items():
            image = fashion.load(picked[label][index:index + 1])[0, 0].numpy()
            pixels = np.rint((image - image.min()) * (255 / (image.max() - image.min()))).astype(np.uint8)
            path = f"img/{name}-{index:02d}.png"
            Image.fromarray(pixels).save(folder / path)
            rows.append(f"{path},{name if index < LABELLED_PER_CLASS else ''}")
    listing = folder / "images.csv"
    listing.write_text("\n".join(rows) + "\n")
    return listing


@pytest.fixture(scope="module")
def made(tmp_path_factory, fashion) -> dict:
    """A trained run without a selection (``fresh``) and a copy with 5 images pending (``queried``)."""
    root = tmp_path_factory.mktemp("people")
    listing = write_listing(root / "data", fashion)
    assert main(["run", *RUN, "--data-dir", str(listing), "--out", str(root / "out")]) == 0
    queried = root / "queried" / "r"
    shutil.copytree(root / "out" / "r", queried)
    assert main(["query", str(queried), "--n", "5", "--quiet"]) == 0
    return {"fresh": root / "out" / "r", "queried": queried, "data": listing.parent}


def copy_run(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "out" / "r"
    shutil.copytree(source, target)
    return target


def state(run_dir: Path) -> dict:
    return json.loads((run_dir / "state.json").read_text())["state"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def assert_fits(text: str) -> None:
    assert all(len(line) <= WIDTH for line in text.splitlines()), max(text.splitlines(), key=len)


# ------------------------------------------------------------------------------------------ query


def test_query_prints_the_batch_and_writes_it_as_csv_json_and_a_contact_sheet(made, tmp_path, capsys):
    run_dir = copy_run(made["fresh"], tmp_path)
    code, out, err = run_cli(capsys, "query", run_dir, "--n", 5, "--to", tmp_path / "batch.csv",
                             "--sheet", tmp_path / "batch.png", "--quiet")
    assert code == 0 and err == ""
    assert_fits(out)
    pending = state(run_dir)["pending"]
    assert pending["round"] == 0 and len(pending["ids"]) == 5
    lines = out.splitlines()
    header = next(index for index, line in enumerate(lines) if line.split()[:3] == ["rank", "id", "score"])
    table = [line.split() for line in lines[header + 1:header + 6]]
    assert [int(row[0]) for row in table] == [0, 1, 2, 3, 4]
    assert [int(row[1]) for row in table] == pending["ids"]
    assert all(row[3] in CLASSES.values() and row[4].endswith("%") and row[5].startswith("img/") for row in table)

    rows = read_csv(tmp_path / "batch.csv")
    assert list(rows[0]) == ["rank", "id", "key", "score", "guess", "confidence", "label"]
    assert [int(row["id"]) for row in rows] == pending["ids"] and [row["rank"] for row in rows] == list("01234")
    scores = [float(row["score"]) for row in rows]
    assert scores == sorted(scores, reverse=True)  # priority order
    for row in rows:
        item = int(row["id"])
        assert item >= 2 * LABELLED_PER_CLASS  # only unlabelled pool items can be selected here
        assert row["key"] == f"img/{class_of(item)}-{item // 2:02d}.png"
        assert row["guess"] in CLASSES.values() and 0.5 <= float(row["confidence"]) <= 1 and row["label"] == ""

    sheet = Image.open(tmp_path / "batch.png")
    sheet.load()
    assert sheet.format == "PNG" and sheet.size == sheet_size(5) == (5 * (THUMB + 2 * PAD), cell_size()[1])
    grey = np.asarray(sheet.convert("L"), dtype=np.int64)
    assert grey.std() > 20 and len(np.unique(grey)) > 50, "the sheet looks blank"
    for rank, row in enumerate(rows):  # each thumbnail is its image, enlarged 28 -> 96 without smoothing
        original = Image.open(made["data"] / row["key"]).convert("L").resize((THUMB, THUMB), Image.Resampling.NEAREST)
        left = rank * (THUMB + 2 * PAD) + PAD
        shown = grey[PAD:PAD + THUMB, left:left + THUMB]
        assert np.abs(shown - np.asarray(original, dtype=np.int64)).max() <= 2, rank
        caption = grey[2 * PAD + THUMB:, left:left + THUMB]
        assert (caption < 128).sum() > 20, "no caption under the thumbnail"

    before = (run_dir / "state.json").read_bytes()
    code, again, _ = run_cli(capsys, "query", run_dir, "--to", tmp_path / "batch.json", "--quiet")
    assert code == 0 and (run_dir / "state.json").read_bytes() == before  # the pending batch, not a new one
    assert "this selection was made before and still waits" in again
    document = json.loads((tmp_path / "batch.json").read_text())
    assert document["round"] == 0 and document["strategy"] == "margin" and document["run"] == "r"
    assert [item["id"] for item in document["items"]] == pending["ids"]
    assert all(item["label"] is None and item["key"].startswith("img/") for item in document["items"])


def test_a_run_without_labels_gets_a_random_first_batch(made, tmp_path, capsys):
    from activelab.run import Run

    run_dir = tmp_path / "out" / "z"
    Run.create(run_dir, data="image-csv", data_dir=made["data"] / "images.csv", n_train_images=0, n_val=4, n_test=4,
               n_holdout=0, max_epochs=1, min_steps=0, al_iter=0)
    code, out, err = run_cli(capsys, "status", run_dir)
    assert code == 0 and "labelled: 0 " in out and "model: none yet" in out and "history: no labels changed" in out
    code, out, err = run_cli(capsys, "query", run_dir, "--n", 3, "--to", tmp_path / "first.csv",
                             "--sheet", tmp_path / "first.png", "--quiet")
    assert code == 0 and "chosen at random as there is no model yet" in out
    assert_fits(out)
    rows = read_csv(tmp_path / "first.csv")  # only the images nobody labelled: the dataset taught the others
    assert rows and all(int(row["id"]) >= 2 * LABELLED_PER_CLASS for row in rows)
    assert all(row["score"] == row["guess"] == row["confidence"] == "" for row in rows)
    assert Image.open(tmp_path / "first.png").size == sheet_size(len(rows))
    assert ("already have a label in the dataset and were taught from it" in out) == (len(rows) < 3)
    code, out, _ = run_cli(capsys, "status", run_dir)
    assert f"pending: {len(rows)} image(s) wait for a label (chosen at random)" in out


def test_the_batch_table_fits_100_columns_with_long_names():
    rows = [{"rank": 3, "id": 1234567, "key": "photos/" + "very-long-folder/" * 10 + "cat.png", "score": 0.123456,
             "guess": "a very long class name indeed", "confidence": 0.5},
            {"rank": 4, "id": 7, "key": "x.png", "score": None, "guess": None, "confidence": None}]
    lines = _batch_table(rows)
    assert all(len(line) <= WIDTH for line in lines)
    assert lines[1].endswith("very-long-folder/cat.png") and "..." in lines[1]
    assert lines[2].split() == ["4", "7", "-", "-", "-", "x.png"]


def test_contact_sheet_shows_grey_and_colour_images_stretched_by_their_own_range():
    rng = np.random.default_rng(0)
    grey = rng.normal(size=(3, 1, 28, 28)).astype(np.float32)
    grey[2] = 0.7  # a constant image shows mid-grey
    shown = display_pixels(grey)
    assert shown[0].shape == (28, 28) and shown[0].min() == 0 and shown[0].max() == 255
    assert (shown[2] == 128).all()
    colour = rng.normal(size=(2, 4, 10, 20))  # 4 channels: the first three are shown, each stretched
    colour[:, 0] = colour[:, 0] * 5 + 3
    pixels = display_pixels(colour)
    assert pixels[0].shape == (10, 20, 3)
    assert all(pixels[0][..., channel].min() == 0 and pixels[0][..., channel].max() == 255 for channel in range(3))
    sheet = contact_sheet(colour, [("#0  id 1", "cat 90%"), ("#1  id 2", "a caption far too long to fit in")],
                          thumb=40, columns=1)
    assert sheet.size == sheet_size(2, thumb=40, columns=1) == (48, 2 * cell_size(40)[1])
    cell = np.asarray(sheet)[PAD + 10:PAD + 30, PAD:PAD + 40]  # 20x10 becomes 40x20, centred in the 40x40 box
    assert cell.std() > 30


# ------------------------------------------------------------------------------------------ label and status


def test_a_filled_in_batch_file_then_skip_relabel_remove_and_status(made, tmp_path, capsys):
    run_dir = copy_run(made["fresh"], tmp_path)
    assert run_cli(capsys, "query", run_dir, "--n", 5, "--to", tmp_path / "batch.csv", "--quiet")[0] == 0
    rows = read_csv(tmp_path / "batch.csv")
    ids = [int(row["id"]) for row in rows]
    for row in rows[:3]:  # class names or indices (bag = 0, trouser = 1); the last two stay empty
        row["label"] = class_of(int(row["id"])) if row is not rows[1] else str(["bag", "trouser"].index(
            class_of(int(row["id"]))))
    write_csv(tmp_path / "batch.csv", rows)

    code, out, err = run_cli(capsys, "label", run_dir, "--labels", tmp_path / "batch.csv", "--annotator", "ada")
    assert code == 0 and err == "" and "recorded 3 label(s) by ada" in out
    assert "2 row(s) with an empty label were left for later" in " ".join(out.split())
    assert_fits(out)
    after = state(run_dir)
    taught = dict(zip(after["labelled_ids"], after["labelled_labels"]))
    assert len(taught) == 8 + 3 and all(taught[item] == ["bag", "trouser"].index(class_of(item)) for item in ids[:3])
    assert after["pending"]["ids"] == ids[3:]

    write_csv(tmp_path / "skip.csv", [{"id": ids[3], "note": "blurry"}])
    code, out, _ = run_cli(capsys, "label", run_dir, "--skip", tmp_path / "skip.csv", "--annotator", "bob")
    assert code == 0 and "skipped 1 pending item(s) by bob" in out
    wrong = "bag" if class_of(ids[0]) == "trouser" else "trouser"
    write_csv(tmp_path / "relabel.csv", [{"id": ids[0], "label": wrong}])
    code, out, _ = run_cli(capsys, "label", run_dir, "--relabel", tmp_path / "relabel.csv", "--annotator", "cy")
    assert code == 0 and "corrected 1 label(s) by cy" in out
    write_csv(tmp_path / "remove.csv", [{"id": ids[1]}])
    code, out, _ = run_cli(capsys, "label", run_dir, "--remove", tmp_path / "remove.csv", "--annotator", "cy")
    assert code == 0 and "removed the labels of 1 item(s) by cy" in out

    after = state(run_dir)
    taught = dict(zip(after["labelled_ids"], after["labelled_labels"]))
    assert ids[1] not in taught and taught[ids[0]] == ["bag", "trouser"].index(wrong) and len(taught) == 10
    assert after["pending"]["ids"] == [ids[4]] and after["skipped_ids"] == [ids[3]]
    assert [(event["op"], event["annotator"]) for event in after["events"]] == [
        ("teach", "dataset"), ("teach", "ada"), ("skip", "bob"), ("relabel", "cy"), ("remove", "cy")]

    code, out, err = run_cli(capsys, "status", run_dir)
    assert code == 0 and err == ""
    assert_fits(out)
    per_class = {name: sum(1 for label in taught.values() if label == index) for index, name in
                 enumerate(["bag", "trouser"])}
    assert "labelled: 10 (pool: 22 unlabelled left; validation 4, test 4)" in out
    for name, count in per_class.items():
        assert any(line.split() == [name, str(count)] for line in out.splitlines()), name
    assert "model: round 0 trained on 8 labels; test accuracy" in out and "macro-F1" in out
    assert "stale: the labels changed since round 0 was trained" in out
    assert "pending: 1 image(s) wait for a label (round 0, margin)" in out
    assert any(line.split() == ["0", str(ids[4]), f"img/{class_of(ids[4])}-{ids[4] // 2:02d}.png"]
               for line in out.splitlines())
    assert f"skipped this round: 1 (ids {ids[3]})" in out
    history = out[out.index("history:"):].splitlines()
    assert "the last 5 of 5" in history[0] and history[1].split() == ["time", "op", "items", "annotator"]
    assert [line.split()[1:] for line in history[2:7]] == [["teach", "8", "dataset"], ["teach", "3", "ada"],
                                                           ["skip", "1", "bob"], ["relabel", "1", "cy"],
                                                           ["remove", "1", "cy"]]

    code, out, _ = run_cli(capsys, "status", run_dir, "--json")
    summary = json.loads(out)
    assert code == 0 and summary["labelled"] == {"total": 10, "per_class": per_class}
    assert summary["stale"] is True and summary["rounds"] == 1 and summary["skipped_this_round"] == [ids[3]]
    assert summary["pending"]["count"] == 1 and summary["pending"]["items"][0]["id"] == ids[4]
    assert summary["last_round"]["test_accuracy"] is not None and summary["test"] == 4
    assert [event["op"] for event in summary["history"]] == ["teach", "teach", "skip", "relabel", "remove"]

    code, out, err = run_cli(capsys, "query", run_dir, "--n", 3)  # the labels changed: train round 1 first
    assert code == 0 and "train on 10 labels" in err and "chosen by round 1's model" in out
    summary = json.loads(run_cli(capsys, "status", run_dir, "--json")[1])
    assert summary["stale"] is False and summary["rounds"] == 2 and summary["pending"]["round"] == 1
    assert summary["pending"]["count"] == 3 and summary["skipped_this_round"] == []


# ------------------------------------------------------------------------------------------ refusals


def _labels(*pairs) -> str:
    return "id,label\n" + "".join(f"{item},{label}\n" for item, label in pairs)


#: A file's text (``{pending}`` is a pending id) and the CLI arguments after RUN_DIR ({file}: the file).
BAD_INPUTS = {
    "unknown id": (_labels((9999, "bag")), ["--labels", "{file}"], "id 9999 is not in the unlabelled pool"),
    "wrong class": (_labels(("{pending}", "wolf")), ["--labels", "{file}"],
                    "label 'wolf' is not one of the classes bag, trouser"),
    "a good row then a bad one": (_labels(("{pending}", "bag"), (9999, "bag")), ["--labels", "{file}"],
                                  "id 9999 is not in the unlabelled pool"),
    "dataset's own label": (_labels((0, "trouser")), ["--labels", "{file}"], "id 0 already has a label in the dataset"),
    "nothing filled in": ("rank,id,label\n0,{pending},\n", ["--labels", "{file}"], "has no label filled in"),
    "same id twice": (_labels(("{pending}", "bag"), ("{pending}", "bag")), ["--labels", "{file}"],
                      "the same id appears twice"),
    "not a number": (_labels(("x", "bag")), ["--labels", "{file}"], "id 'x' is not a whole number"),
    "no label column": ("id\n{pending}\n", ["--labels", "{file}"], "has no column label"),
    "missing file": (None, ["--labels", "{file}"], "does not exist"),
    "skip what is not pending": ("id\n9999\n", ["--skip", "{file}"], "id 9999 is not in the pending selection"),
    "relabel what has no label": (_labels(("{pending}", "bag")), ["--relabel", "{file}"],
                                  "has no label in this run, so it cannot be relabelled"),
    "relabel to nothing": ("id,label\n{pending},\n", ["--relabel", "{file}"], "has an empty label"),
    "remove what has no label": ("id\n9999\n", ["--remove", "{file}"], "id 9999 has no label in this run"),
    "two actions": ("id\n{pending}\n", ["--skip", "{file}", "--remove", "{file}"],
                    "give only one of --labels, --skip, --relabel, --remove per call, got --skip and --remove"),
    "no action": (None, [], "give one of --labels, --skip, --relabel, --remove"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_label_files_are_one_sentence_and_change_nothing(made, tmp_path, capsys, case):
    text, arguments, message = BAD_INPUTS[case]
    run_dir = copy_run(made["queried"], tmp_path)
    pending = state(run_dir)["pending"]["ids"][0]
    path = tmp_path / "decisions.csv"
    if text is not None:
        path.write_text(text.replace("{pending}", str(pending)))
    before = (run_dir / "state.json").read_bytes()
    code, out, err = run_cli(capsys, "label", run_dir, *[arg.replace("{file}", str(path)) for arg in arguments])
    assert code == 2 and out == "" and err.startswith("activelab: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err
    assert (run_dir / "state.json").read_bytes() == before


@pytest.mark.parametrize("arguments, message", [
    (["--to", "{missing}/batch.csv"], "the folder {missing} does not exist"),
    (["--sheet", "{missing}/batch.png"], "the folder {missing} does not exist"),
    (["--to", "{tmp}/batch.txt"], "--to {tmp}/batch.txt must end in .csv or .json"),
    (["--sheet", "{tmp}/batch.jpg"], "must end in .png"),
    (["--to", "{tmp}/folder.csv"], "it is a directory"),
    (["--n", "0"], "--n must be at least 1, got 0"),
])
def test_bad_query_targets_are_one_sentence_and_change_nothing(made, tmp_path, capsys, arguments, message):
    run_dir = copy_run(made["fresh"], tmp_path)
    names = {"{missing}": str(tmp_path / "missing"), "{tmp}": str(tmp_path)}
    (tmp_path / "folder.csv").mkdir()

    def filled(text: str) -> str:
        for key, value in names.items():
            text = text.replace(key, value)
        return text

    before = (run_dir / "state.json").read_bytes()
    files = sorted(tmp_path.iterdir())
    code, out, err = run_cli(capsys, "query", run_dir, *map(filled, arguments), "--quiet")
    assert code == 2 and out == "" and err.count("\n") == 1 and filled(message) in err, err
    assert (run_dir / "state.json").read_bytes() == before and state(run_dir)["pending"] is None
    assert sorted(tmp_path.iterdir()) == files


def test_status_and_label_of_a_folder_without_a_run_are_one_sentence(tmp_path, capsys):
    for argv in (["status", tmp_path], ["label", tmp_path, "--remove", tmp_path / "x.csv"]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 2 and err.count("\n") == 1 and "is not an activelab run directory" in err, err
    assert list(tmp_path.iterdir()) == []
