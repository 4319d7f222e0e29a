"""DeepWeeds and Cassava from small fixtures in their published layouts (CSV + folder of JPEGs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from activelab.data.loading import make_loader
from activelab.data.sources import get_source
from activelab.data.sources import cassava, deepweeds
from activelab.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from activelab.errors import ConfigError, DataError, DatasetNotFoundError

COLOURS = [(255, 255, 255), (0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255),
           (255, 0, 255), (128, 128, 128)]


def write_jpeg(path, colour, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=95)


def write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *(",".join(map(str, row)) for row in rows)]) + "\n")


@pytest.fixture
def weeds(tmp_path):
    """18 images, two per class, with the published labels.csv and split files."""
    root = tmp_path / "deepweeds"
    rows = []
    for index in range(18):
        label = index % 9
        name = f"20170{index:03d}-1200-{label}.jpg"
        write_jpeg(root / "images" / name, COLOURS[label], (256, 256))
        rows.append((name, label, deepweeds.CLASS_NAMES[label]))
    write_csv(root / "labels.csv", "Filename,Label,Species", rows)
    write_csv(root / "train_subset0.csv", "Filename,Label,Species", rows[:12])
    write_csv(root / "test_subset0.csv", "Filename,Label,Species", rows[12:])
    return root, rows


def test_deepweeds_sizes_labels_split_and_normalisation(weeds):
    root, rows = weeds
    data = get_source("deepweeds").load(data_dir=root)
    assert len(data) == 18 and data.input_shape == (3, 224, 224) and data.num_classes == 9
    assert data.class_names[8] == "Negative"
    assert np.bincount(data.labels).tolist() == [2] * 9
    assert data.key(4) == rows[4][0]
    assert data.predefined_test.tolist() == [False] * 12 + [True] * 6
    batch = data.load(np.array([9, 0]))  # two white images
    assert batch.shape == (2, 3, 224, 224) and batch.dtype == torch.float32
    white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(batch.mean(dim=(2, 3)), white.expand(2, 3), atol=0.02, rtol=0)


def test_deepweeds_repository_layout_and_no_split(weeds):
    root, _ = weeds
    (root / "labels").mkdir()
    for name in ("labels.csv", "test_subset0.csv"):
        (root / name).rename(root / "labels" / name)
    assert get_source("deepweeds").load(data_dir=root).predefined_test.sum() == 6
    (root / "labels" / "test_subset0.csv").unlink()
    assert get_source("deepweeds").load(data_dir=root, size=64).predefined_test is None


def test_deepweeds_size_option(weeds):
    data = get_source("deepweeds").load(data_dir=weeds[0], size="32,48")
    assert data.input_shape == (3, 32, 48) and data.load(np.array([1])).shape == (1, 3, 32, 48)


def test_deepweeds_unknown_class_names_file_line_and_value(weeds):
    root, rows = weeds
    write_csv(root / "labels.csv", "Filename,Label,Species", [rows[0], (rows[1][0], 9, "Unknown")])
    with pytest.raises(DataError, match=r"labels.csv line 3: label '9' is not a known class"):
        get_source("deepweeds").load(data_dir=root)


def test_deepweeds_missing_column_is_a_data_error(weeds):
    root, rows = weeds
    write_csv(root / "labels.csv", "Filename,Species", [(name, species) for name, _, species in rows])
    with pytest.raises(DataError, match=r"labels.csv has no column 'Label'"):
        get_source("deepweeds").load(data_dir=root)


def test_deepweeds_missing_image_and_foreign_split_are_data_errors(weeds):
    root, rows = weeds
    (root / "images" / rows[5][0]).unlink()
    with pytest.raises(DataError, match=rf"labels.csv line 7: image '{rows[5][0]}' is not in"):
        get_source("deepweeds").load(data_dir=root)
    write_jpeg(root / "images" / rows[5][0], COLOURS[5], (256, 256))
    write_csv(root / "test_subset0.csv", "Filename,Label,Species", [("other.jpg", 0, "Chinee apple")])
    with pytest.raises(DataError, match=r"test_subset0.csv line 2: image 'other.jpg' is not in labels.csv"):
        get_source("deepweeds").load(data_dir=root)


def test_unreadable_image_names_the_file(weeds):
    root, rows = weeds
    (root / "images" / rows[3][0]).write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    data = get_source("deepweeds").load(data_dir=root)
    data.load(np.array([2]))
    with pytest.raises(DataError, match=rf"{rows[3][0]} could not be decoded as an image"):
        data.load(np.array([2, 3]))


def test_deepweeds_missing_dataset_says_where_to_get_it(tmp_path):
    assert deepweeds.locate(None) is None
    with pytest.raises(DatasetNotFoundError, match=r"github.com/AlexOlsen/DeepWeeds .*--data-dir"):
        get_source("deepweeds").load()
    with pytest.raises(ConfigError, match="has no option 'binary'"):
        get_source("deepweeds").load(data_dir=tmp_path, binary=True)


@pytest.fixture
def leaves(tmp_path):
    """Ten 80x60 leaves, two per class, as in the Kaggle download."""
    root = tmp_path / "cassava"
    rows = []
    for index in range(10):
        name = f"{1000 + index}.jpg"
        write_jpeg(root / "train_images" / name, COLOURS[index % 5], (80, 60))
        rows.append((name, index % 5))
    write_csv(root / "train.csv", "image_id,label", rows)
    return root, rows


def test_cassava_sizes_labels_and_loading_in_workers(leaves):
    root, rows = leaves
    data = get_source("cassava").load(data_dir=root)
    assert len(data) == 10 and data.input_shape == (3, 224, 224) and data.num_classes == 5
    assert data.predefined_test is None and data.key(3) == "1003.jpg"
    np.testing.assert_array_equal(data.labels, [label for _, label in rows])
    positions = np.array([9, 0, 4, 4, 2])
    loader = make_loader(data, positions, labels=data.labels[positions], batch_size=2, num_workers=2)
    images, labels = map(torch.cat, zip(*loader))
    torch.testing.assert_close(images, data.load(positions))
    np.testing.assert_array_equal(labels.numpy(), data.labels[positions])


def test_cassava_label_outside_the_classes(leaves):
    root, rows = leaves
    write_csv(root / "train.csv", "image_id,label", [*rows[:4], (rows[4][0], 5)])
    with pytest.raises(DataError, match=r"train.csv line 6: label '5' is not a known class"):
        get_source("cassava").load(data_dir=root)


def test_cassava_missing_column_and_empty_cell(leaves):
    root, rows = leaves
    write_csv(root / "train.csv", "image,label", rows)
    with pytest.raises(DataError, match=r"train.csv has no column 'image_id' \(its header is image,label\)"):
        get_source("cassava").load(data_dir=root)
    write_csv(root / "train.csv", "image_id,label", [rows[0], (rows[1][0],)])
    with pytest.raises(DataError, match=r"train.csv line 3 has no value in column 'label'"):
        get_source("cassava").load(data_dir=root)


def test_cassava_missing_dataset_says_where_to_get_it(tmp_path):
    assert cassava.locate(None) is None
    with pytest.raises(DatasetNotFoundError, match=r"kaggle.com/c/cassava-leaf-disease-classification"):
        get_source("cassava").load()
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path)):
        get_source("cassava").load(data_dir=tmp_path)
