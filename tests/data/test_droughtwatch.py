"""DroughtWatch from TFRecord fixtures written in the benchmark's exact format."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch

from activelab.data.loading import make_loader
from activelab.data.sources import cache_root, get_source
from activelab.data.sources import droughtwatch
from activelab.data.tfrecord import encode_example, write_records
from activelab.errors import ConfigError, DataError, DatasetNotFoundError

BANDS = [f"B{number}" for number in range(1, 12)]
TRAIN_FILES = (7, 5)  # records per train part file
VAL_RECORDS = 4


def write_droughtwatch(folder, *, floats=False, seed=0):
    """Write train/part-r-0000{0,1} and val/part-r-00000 like the published files; return images and labels."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for split, counts in (("train", TRAIN_FILES), ("val", (VAL_RECORDS,))):
        (folder / split).mkdir(parents=True)
        for part, count in enumerate(counts):
            records = []
            for _ in range(count):
                image = rng.integers(0, 256, (11, 65, 65), dtype=np.uint8)
                label = len(labels) % 4
                features = {band: (image[i].astype(np.float32) / 8 if floats else image[i].tobytes())
                            for i, band in enumerate(BANDS)}
                features["label"] = np.array([label])
                records.append(encode_example(features))
                images.append(image.astype(np.float64) / (8 if floats else 1))
                labels.append(label)
            write_records(folder / split / f"part-r-{part:05d}", records)
    return np.stack(images), np.array(labels)


@pytest.fixture
def fixture(tmp_path):
    root = tmp_path / "droughtwatch"
    images, labels = write_droughtwatch(root)
    return root, images, labels


def expected(images, positions, bands):
    train = images[:sum(TRAIN_FILES)]
    columns = [BANDS.index(band) for band in bands]
    mean = train.mean(axis=(0, 2, 3))[columns, None, None]
    std = train.std(axis=(0, 2, 3))[columns, None, None]
    return (images[positions][:, columns] - mean) / std


def test_sizes_labels_split_and_keys(fixture):
    root, images, labels = fixture
    data = get_source("droughtwatch").load(data_dir=root)
    assert len(data) == 16 and data.input_shape == (11, 65, 65) and data.num_classes == 4
    np.testing.assert_array_equal(data.labels, labels)
    assert np.bincount(data.labels).tolist() == [4, 4, 4, 4]
    assert data.predefined_test.tolist() == [False] * 12 + [True] * 4
    assert data.key(0) == "train/part-r-00000#0" and data.key(8) == "train/part-r-00001#1"
    assert data.key(15) == "val/part-r-00000#3"


@pytest.mark.parametrize("floats", [False, True], ids=["bytes-bands", "float-bands"])
def test_images_are_standardised_per_band_over_the_train_split(tmp_path, floats):
    images, _ = write_droughtwatch(tmp_path / "dw", floats=floats)
    data = get_source("droughtwatch").load(data_dir=tmp_path / "dw")
    positions = np.array([13, 2, 2, 0])
    batch = data.load(positions)
    assert batch.dtype == torch.float32 and batch.shape == (4, 11, 65, 65)
    np.testing.assert_allclose(batch.numpy(), expected(images, positions, BANDS), rtol=1e-4, atol=1e-4)


def test_binary_merges_one_to_three_cows(fixture):
    root, _, labels = fixture
    data = get_source("droughtwatch").load(data_dir=root, binary=True)
    assert data.class_names == ("0 cows", "1+ cows")
    np.testing.assert_array_equal(data.labels, (labels > 0).astype(np.int64))


def test_rgb_selects_b4_b3_b2(fixture):
    root, images, _ = fixture
    data = get_source("droughtwatch").load(data_dir=root, rgb=True)
    assert data.input_shape == (3, 65, 65)
    np.testing.assert_allclose(data.load(np.array([5])).numpy(), expected(images, [5], ["B4", "B3", "B2"]),
                               rtol=1e-4, atol=1e-4)


def test_bands_option_is_honoured_in_its_order(fixture):
    root, images, _ = fixture
    data = get_source("droughtwatch").load(data_dir=root, bands="B8, b2")
    assert data.input_shape == (2, 65, 65)
    np.testing.assert_allclose(data.load(np.array([1, 14])).numpy(), expected(images, [1, 14], ["B8", "B2"]),
                               rtol=1e-4, atol=1e-4)
    assert data.fingerprint() != get_source("droughtwatch").load(data_dir=root, bands="B2,B8").fingerprint()


@pytest.mark.parametrize("options, message", [
    ({"bands": "B2,B12"}, "'B12', which is not a DroughtWatch band"),
    ({"bands": ""}, "comma-separated list"),
    ({"bands": "B2,B2"}, "distinct"),
    ({"rgb": True, "bands": "B2,B8"}, "give only one of them"),
    ({"binary": "maybe"}, "must be true or false"),
    ({"normalise": True}, "has no option 'normalise'"),
])
def test_bad_options_are_config_errors(fixture, options, message):
    with pytest.raises(ConfigError, match=message):
        get_source("droughtwatch").load(data_dir=fixture[0], **options)


def test_converted_once_to_a_chunked_hdf5_in_the_cache(fixture, monkeypatch):
    root, _, _ = fixture
    get_source("droughtwatch").load(data_dir=root)
    converted = list((cache_root() / "droughtwatch").iterdir())
    assert len(converted) == 1 and converted[0].suffix == ".h5"  # no temporary file left behind
    with h5py.File(converted[0], "r") as handle:
        assert handle["images"].chunks == (256, 11, 65, 65) and handle["images"].dtype == np.uint8
    monkeypatch.setattr(droughtwatch, "_convert", lambda *args: pytest.fail("converted twice"))
    assert len(get_source("droughtwatch").load(data_dir=root, rgb=True)) == 16


def test_zip_layout_is_found_and_upload_leftovers_are_ignored(tmp_path):
    root = tmp_path / "download"
    write_droughtwatch(root / "droughtwatch_data")
    (root / "droughtwatch_data" / "train" / "part-r-00009.gstmp").write_bytes(b"partial upload")
    assert droughtwatch.locate(root) == root / "droughtwatch_data"
    assert len(get_source("droughtwatch").load(data_dir=root)) == 16


def test_found_in_the_data_root(isolated_roots):
    write_droughtwatch(isolated_roots / "data" / "droughtwatch")
    assert get_source("droughtwatch").locate(None) == isolated_roots / "data" / "droughtwatch"
    assert len(get_source("droughtwatch").load()) == 16


def test_missing_dataset_says_where_to_get_and_put_it(tmp_path):
    assert droughtwatch.locate(None) is None
    with pytest.raises(DatasetNotFoundError, match=r"droughtwatch_97K.zip .*--data-dir"):
        get_source("droughtwatch").load()
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path)):
        get_source("droughtwatch").load(data_dir=tmp_path)


def test_truncated_record_names_file_and_record_and_leaves_no_cache(fixture):
    root, _, _ = fixture
    part = root / "train" / "part-r-00001"
    part.write_bytes(part.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"train/part-r-00001 is truncated inside record 4"):
        get_source("droughtwatch").load(data_dir=root)
    assert not any((cache_root() / "droughtwatch").iterdir())


def test_corrupt_record_names_file_and_record(fixture):
    root, _, _ = fixture
    part = root / "val" / "part-r-00000"
    data = bytearray(part.read_bytes())
    data[100] ^= 0xFF  # inside the data of record 0
    part.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"val/part-r-00000 has a bad data checksum in record 0"):
        get_source("droughtwatch").load(data_dir=root)


def test_records_that_are_not_droughtwatch_are_data_errors(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
    band = bytes(65 * 65)
    write_records(tmp_path / "val" / "part-r-00000", [encode_example({**dict.fromkeys(BANDS, band),
                                                                     "label": np.array([0])})])
    write_records(tmp_path / "train" / "part-r-00000", [encode_example({**dict.fromkeys(BANDS, band),
                                                                       "label": np.array([7])})])
    with pytest.raises(DataError, match=r"part-r-00000 record 0 has label \[7\], not one int64 in 0..3"):
        get_source("droughtwatch").load(data_dir=tmp_path)
    write_records(tmp_path / "train" / "part-r-00000", [encode_example({"B1": band, "label": np.array([1])})])
    with pytest.raises(DataError, match=r"record 0 has no 65x65 band 'B2'"):
        get_source("droughtwatch").load(data_dir=tmp_path)
    floats = np.zeros(65 * 65, np.float32)
    mixed = {**dict.fromkeys(BANDS, band), "B5": floats, "label": np.array([1])}
    write_records(tmp_path / "train" / "part-r-00000", [encode_example(mixed)])
    with pytest.raises(DataError, match=r"part-r-00000 record 0 mixes bands stored as bytes and as floats"):
        get_source("droughtwatch").load(data_dir=tmp_path)
    write_records(tmp_path / "val" / "part-r-00000", [encode_example({**dict.fromkeys(BANDS, floats),
                                                                     "label": np.array([0])})])
    write_records(tmp_path / "train" / "part-r-00000", [encode_example({**dict.fromkeys(BANDS, band),
                                                                       "label": np.array([0])})])
    with pytest.raises(DataError, match=r"val/part-r-00000 record 0 mixes bands stored as bytes and as floats"):
        get_source("droughtwatch").load(data_dir=tmp_path)


def test_loads_lazily_in_worker_processes(fixture):
    root, _, labels = fixture
    data = get_source("droughtwatch").load(data_dir=root, bands="B3,B5")
    data.load(np.array([0]))  # a handle opened in this process must not leak into the workers
    positions = np.arange(len(data))[::-1].copy()
    loader = make_loader(data, positions, labels=data.labels[positions], batch_size=5, num_workers=2)
    images, batch_labels = map(torch.cat, zip(*loader))
    torch.testing.assert_close(images, data.load(positions))
    np.testing.assert_array_equal(batch_labels.numpy(), labels[positions])
    copy = pickle.loads(pickle.dumps(data))
    torch.testing.assert_close(copy.load(np.array([3, 1])), data.load(np.array([3, 1])))
