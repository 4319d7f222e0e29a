"""Items without a label: the run stops with its selection saved, a person's labels are imported, it goes on."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from activelab.cli import main
from activelab.data.state import LabelState

RUN = ["run", "--data-class", "image-csv", "--n-val", "8", "--n-test", "8", "--n-train-images", "8",
       "--al-samples-per-iter", "4", "--al-iter", "2", "--max-epochs", "1", "--min-steps", "0", "--quiet", "--run-name", "h"]


@pytest.fixture()
def partly_labelled(tmp_path):
    """60 images listed in a CSV: 24 labelled cat/dog (enough for val, test and the initial set), 36 not."""
    rng = np.random.default_rng(0)
    rows = ["path,label"]
    for index in range(60):
        name = f"img{index:03d}.png"
        Image.fromarray((rng.random((12, 12)) * 255).astype(np.uint8)).save(tmp_path / name)
        rows.append(f"{name},{('cat', 'dog')[index % 2] if index < 24 else ''}")
    listing = tmp_path / "images.csv"
    listing.write_text("\n".join(rows) + "\n")
    return listing


def pending_ids(run_dir):
    return json.loads((run_dir / "state.json").read_text())["state"]["pending"]["ids"]


def test_selection_of_unlabelled_items_waits_for_a_person(partly_labelled, tmp_path, capsys):
    out = tmp_path / "out"
    run_dir = out / "h"
    given, waits = {}, 0
    for _ in range(4):
        assert main([*RUN, "--data-dir", str(partly_labelled), "--out", str(out)]) == 0  # waiting is not an error
        printed = capsys.readouterr().out
        if "wait for a person" not in printed:
            break
        waits += 1
        assert "activelab export --pending" in printed and "activelab label" in printed
        labels_file = tmp_path / "labels.csv"
        batch = {item: ("cat" if item % 2 == 0 else "1") for item in pending_ids(run_dir) if item >= 24}
        labels_file.write_text("id,label\n" + "".join(f"{item},{label}\n" for item, label in batch.items()))
        assert main(["label", str(run_dir), "--labels", str(labels_file), "--annotator", "ada"]) == 0
        given.update({item: 0 if label == "cat" else 1 for item, label in batch.items()})
    assert waits == 2 and given, "each of the two acquisitions should have waited for a person"
    state = LabelState.load(run_dir / "state.json")
    assert state.n_labelled == 16 and state.pending is None
    acquired = dict(zip(state.labelled_ids.tolist(), state.labelled_labels.tolist()))
    for item, label in given.items():
        assert acquired[item] == label
    taught_by_ada = [event for event in state.events if event["annotator"] == "ada"]
    assert sorted(item for event in taught_by_ada for item in event["ids"]) == sorted(given)
    assert all(event["op"] == "teach" and event["time"] for event in taught_by_ada)


@pytest.mark.parametrize("rows, message", [
    ("id,label\n30,wolf\n", "label 'wolf' is not one of the classes cat, dog"),
    ("id,class\n30,cat\n", "has no column label"),
    ("id,label\n3,cat\n", "id 3 already has a label in the dataset"),
    ("id,label\n9999,cat\n", "id 9999 is not in the unlabelled pool"),
    ("id,label\nx,cat\n", "id 'x' is not a whole number"),
    ("id,label\n30,cat\n30,dog\n", "the same id appears twice"),
])
def test_a_bad_label_file_changes_nothing(partly_labelled, tmp_path, capsys, rows, message):
    out = tmp_path / "out"
    main([*RUN, "--data-dir", str(partly_labelled), "--out", str(out)])
    before = (out / "h" / "state.json").read_bytes()
    labels_file = tmp_path / "bad.csv"
    labels_file.write_text(rows)
    capsys.readouterr()
    assert main(["label", str(out / "h"), "--labels", str(labels_file)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert (out / "h" / "state.json").read_bytes() == before
