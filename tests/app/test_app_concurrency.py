"""Many label submissions at once lose nothing; two tabs labelling one item: the last write wins."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from app_helpers import create_project, csrf, make_client, upload

from activelab.data.state import LabelState


def test_fifty_concurrent_label_submissions_are_all_kept(tmp_path, fashion_pngs):
    paths, truth, classes = fashion_pngs
    client = make_client(tmp_path / "project")
    create_project(client, classes)
    assert len(upload(client, paths[:60]).json()["added"]) == 60
    headers = csrf(client)

    def submit(item: int) -> int:
        return client.post("/api/label", json={"id": item, "label": int(truth[item]), "annotator": f"p{item % 5}"},
                           headers=headers).status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        codes = list(pool.map(submit, range(50)))
    assert codes == [200] * 50
    state = LabelState.load(tmp_path / "project" / "run" / "state.json")  # checksum verified
    assert sorted(state.labelled_ids.tolist()) == list(range(50))
    assert dict(zip(state.labelled_ids.tolist(), state.labelled_labels.tolist())) == {
        item: int(truth[item]) for item in range(50)}
    assert sorted(item for event in state.events for item in event["ids"]) == list(range(50))
    assert state.pool_ids.tolist() == list(range(50, 60))
    counts = client.get("/api/status").json()["per_class"]
    assert counts == {name: int((truth[:50] == index).sum()) for index, name in enumerate(classes)}


def test_two_tabs_labelling_one_item_the_last_write_wins_and_both_are_in_the_history(tmp_path, fashion_pngs):
    paths, _, classes = fashion_pngs
    client = make_client(tmp_path / "project")
    create_project(client, classes)
    upload(client, paths[:5])
    headers = csrf(client)
    for tab, label in (("tab-a", 3), ("tab-b", 7)):
        assert client.post("/api/label", json={"id": 2, "label": label, "annotator": tab},
                           headers=headers).status_code == 200
    state = LabelState.load(tmp_path / "project" / "run" / "state.json")
    assert state.labelled_labels[state.labelled_ids == 2].tolist() == [7]
    history = [(event["op"], event["labels"], event["annotator"]) for event in state.events if 2 in event["ids"]]
    assert history == [("teach", [3], "tab-a"), ("relabel", [7], "tab-b")]

    def race(label: int) -> int:  # both tabs at once: either order, both kept
        return client.post("/api/label", json={"id": 4, "label": label}, headers=headers).status_code

    with ThreadPoolExecutor(max_workers=2) as pool:
        assert list(pool.map(race, (1, 5))) == [200, 200]
    state = LabelState.load(tmp_path / "project" / "run" / "state.json")
    events = [event for event in state.events if 4 in event["ids"]]
    assert [event["op"] for event in events] == ["teach", "relabel"]
    assert state.labelled_labels[state.labelled_ids == 4].tolist() == events[-1]["labels"]
    assert np.isin([1, 5], [label for event in events for label in event["labels"]]).all()
