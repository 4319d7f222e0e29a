"""The user's own images: image-folder, image-csv and arrays (.npz and HDF5), and the option checks they share."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from activelab.data.base import UNLABELLED
from activelab.data.loading import make_loader
from activelab.data.options import flag_option, given_path, names_option, size_option
from activelab.data.sources import get_source, sources
from activelab.errors import ConfigError, DataError, DatasetNotFoundError


def write_png(path, value, size=(12, 10), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


# ---------------------------------------------------------------------------------- registry


def test_all_sources_are_registered_with_their_options():
    registered = sources()
    assert {"droughtwatch", "deepweeds", "cassava", "image-folder", "image-csv", "arrays"} <= set(registered)
    assert registered["droughtwatch"].options == ("binary", "rgb", "bands")
    assert registered["droughtwatch"].classes == 4 and registered["deepweeds"].classes == 9
    assert [registered[name].classes for name in ("image-folder", "image-csv", "arrays")] == [None] * 3


@pytest.mark.parametrize("name", ["image-folder", "image-csv", "arrays"])
def test_your_own_data_sources_need_a_data_dir(name, tmp_path):
    source = get_source(name)
    assert source.locate(None) is None and source.locate(tmp_path / "absent") is None
    with pytest.raises(ConfigError, match=rf"the {name} source needs --data-dir"):
        source.load()
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        source.load(data_dir=tmp_path / "absent")
    with pytest.raises(ConfigError, match=rf"the {name} source has no option 'bands'"):
        source.load(data_dir=tmp_path, bands="B1")


# ----------------------------------------------------------------------------------- options


def test_option_values_are_parsed_or_rejected_in_one_sentence(tmp_path):
    assert flag_option("rgb", "Yes") is True and flag_option("rgb", 0) is False and flag_option("rgb", np.bool_(1))
    assert size_option(224) == (224, 224) and size_option("240x320") == (240, 320) and size_option(None) is None
    assert size_option((32, 48)) == (32, 48)
    assert names_option("bands", " B2, B8") == ("B2", "B8") and names_option("classes", ["a", "b"]) == ("a", "b")
    assert given_path(None) is None and given_path(tmp_path / "absent") is None and given_path(tmp_path) == tmp_path
    for check, value in ((flag_option, "maybe"), (names_option, ["a", 3]), (names_option, "a,,b")):
        with pytest.raises(ConfigError, match=r"^option x=.*\.$"):
            check("x", value)
    with pytest.raises(ConfigError, match=r"option size=\(0, 5\) must be a positive height,width"):
        size_option((0, 5))


# ------------------------------------------------------------------------------ image-folder


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "pets"
    write_png(root / "dog" / "b.png", (255, 255, 255))
    write_png(root / "dog" / "a.png", (0, 0, 0), size=(30, 20))  # other size: resized
    write_png(root / "dog" / "puppies" / "c.png", 128, mode="L")  # nested, grey: converted to RGB
    write_png(root / "cat" / "z.png", (255, 0, 0, 128), mode="RGBA")
    (root / "cat" / "notes.txt").write_text("not an image")
    write_png(root / "cat" / ".hidden.png", (0, 0, 0))
    (root / "empty").mkdir()
    return root


def test_image_folder_classes_and_ids_are_sorted(folder):
    data = get_source("image-folder").load(data_dir=folder)
    assert data.class_names == ("cat", "dog", "empty")
    assert [data.key(i) for i in range(len(data))] == ["cat/z.png", "dog/a.png", "dog/b.png", "dog/puppies/c.png"]
    assert data.labels.tolist() == [0, 1, 1, 1]
    assert data.input_shape == (3, 10, 12)  # the first image's size
    batch = data.load(np.arange(4))
    assert batch.shape == (4, 3, 10, 12)
    assert batch[1].max() < batch[2].min()  # black below white after normalisation
    assert torch.allclose(batch[3][0], batch[3][1] * 0.224 / 0.229 + (0.456 - 0.485) / 0.229, atol=1e-4)


def test_image_folder_size_and_grayscale_options(folder):
    data = get_source("image-folder").load(data_dir=folder, size=16, grayscale="true")
    assert data.input_shape == (1, 16, 16) and data.load(np.array([0, 3])).shape == (2, 1, 16, 16)
    with pytest.raises(ConfigError, match="option size='big'"):
        get_source("image-folder").load(data_dir=folder, size="big")


def test_image_folder_without_images_is_a_data_error(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match="holds no images in class sub-folders"):
        get_source("image-folder").load(data_dir=tmp_path)
    (tmp_path / "file.csv").write_text("path,label\n")
    with pytest.raises(DatasetNotFoundError, match="is not a folder"):
        get_source("image-folder").load(data_dir=tmp_path / "file.csv")


# --------------------------------------------------------------------------------- image-csv


@pytest.fixture
def table(tmp_path):
    for name, value in (("x1.png", 10), ("x2.png", 200), ("sub/x3.png", 90), ("x4.png", 40)):
        write_png(tmp_path / "images" / name, (value, value, value))
    path = tmp_path / "images.csv"
    path.write_text("path,label\nimages/x1.png,10\nimages/x2.png,\nimages/sub/x3.png,2\n"
                    f"{tmp_path / 'images' / 'x4.png'},10\n")
    return path


def test_image_csv_labels_and_unlabelled_items(table):
    data = get_source("image-csv").load(data_dir=table)
    assert data.class_names == ("2", "10")  # integers sort numerically
    assert data.labels.tolist() == [1, UNLABELLED, 0, 1]
    assert data.key(0) == "images/x1.png" and data.load(np.array([3, 1])).shape == (2, 3, 10, 12)


def test_image_csv_classes_option(table):
    data = get_source("image-csv").load(data_dir=table, classes="10,2,7")
    assert data.class_names == ("10", "2", "7") and data.labels.tolist() == [0, UNLABELLED, 1, 0]
    with pytest.raises(DataError, match=r"images.csv line 4: label '2' is not a known class"):
        get_source("image-csv").load(data_dir=table, classes=["10", "7"])


def test_image_csv_only_unlabelled_needs_classes(tmp_path):
    write_png(tmp_path / "a.png", 0)
    (tmp_path / "pool.csv").write_text("path,label\na.png,\n")
    with pytest.raises(ConfigError, match="pass the class names with the classes option"):
        get_source("image-csv").load(data_dir=tmp_path / "pool.csv")
    data = get_source("image-csv").load(data_dir=tmp_path / "pool.csv", classes="cat,dog")
    assert data.labels.tolist() == [UNLABELLED] and data.num_classes == 2


@pytest.mark.parametrize("content, message", [
    ("file,label\nimages/x1.png,a\n", r"images.csv has no column 'path' \(its header is file,label\)"),
    ("path,label\nimages/x1.png,a\nimages/nope.png,b\n", r"images.csv line 3: image 'images/nope.png' is not in"),
    ("path,label\nimages/x1.png,a\nimages/x1.png,b\n", r"images.csv line 3: image 'images/x1.png' is listed twice"),
    ("", r"images.csv has no column 'path' \(its header is empty\)"),
])
def test_image_csv_errors_name_file_line_and_value(table, content, message):
    table.write_text(content)
    with pytest.raises(DataError, match=message):
        get_source("image-csv").load(data_dir=table)


def test_image_csv_unreadable_image(table):
    (table.parent / "images" / "x2.png").write_bytes(b"\x89PNG broken")
    data = get_source("image-csv").load(data_dir=table)
    with pytest.raises(DataError, match=r"x2.png could not be decoded as an image"):
        data.load(np.array([1]))
    assert data.load(np.array([], dtype=np.int64)).shape == (0, 3, 10, 12)


# ------------------------------------------------------------------------------------ arrays


def images_nchw(count=40, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, channels, 9, 11), dtype=np.uint8)


def reference_batch(x_nchw, positions):
    pixels = x_nchw.astype(np.float64) / 255
    mean = pixels.mean(axis=(0, 2, 3))[:, None, None]
    std = pixels.std(axis=(0, 2, 3))[:, None, None]
    return ((pixels[positions] - mean) / std).astype(np.float32)


def test_uncompressed_npz_is_memory_mapped(tmp_path):
    x = images_nchw()
    y = np.arange(40) % 4
    np.savez(tmp_path / "pool.npz", X=x, y=y)
    data = get_source("arrays").load(data_dir=tmp_path / "pool.npz")
    assert data.input_shape == (3, 9, 11) and data.class_names == ("0", "1", "2", "3")
    np.testing.assert_array_equal(data.labels, y)
    positions = np.array([7, 0, 7, 39])
    np.testing.assert_allclose(data.load(positions).numpy(), reference_batch(x, positions), atol=1e-5)
    assert isinstance(data._images._array, np.memmap)
    copy = pickle.loads(pickle.dumps(data))  # pickles the file's location, not its contents
    assert copy._images._array is None and len(pickle.dumps(data)) < x.nbytes
    torch.testing.assert_close(copy.load(positions), data.load(positions))
    assert data.load(np.array([], dtype=np.int64)).shape == (0, 3, 9, 11)


@pytest.mark.parametrize("layout", ["nhwc", "nhw"])
def test_other_layouts_give_the_same_images(tmp_path, layout):
    x = images_nchw(channels=3 if layout == "nhwc" else 1)
    stored = x.transpose(0, 2, 3, 1) if layout == "nhwc" else x[:, 0]
    np.savez_compressed(tmp_path / "pool.npz", X=stored, y=np.zeros(40, dtype=np.int64))
    data = get_source("arrays").load(data_dir=tmp_path / "pool.npz")
    assert data.input_shape == x.shape[1:]
    np.testing.assert_allclose(data.load(np.array([3, 5])).numpy(), reference_batch(x, [3, 5]), atol=1e-5)


def test_ambiguous_layout_needs_the_layout_option(tmp_path):
    x = np.zeros((4, 3, 5, 3), dtype=np.float32)
    np.savez(tmp_path / "pool.npz", X=x, y=np.zeros(4, dtype=np.int64))
    with pytest.raises(ConfigError, match="pass layout=nchw or layout=nhwc"):
        get_source("arrays").load(data_dir=tmp_path / "pool.npz")
    assert get_source("arrays").load(data_dir=tmp_path / "pool.npz", layout="nhwc").input_shape == (3, 3, 5)
    with pytest.raises(ConfigError, match="must be nchw or nhwc"):
        get_source("arrays").load(data_dir=tmp_path / "pool.npz", layout="chw")


@pytest.fixture
def hdf5_pool(tmp_path):
    x = images_nchw(count=300, channels=1)
    y = np.arange(300) % 3
    y[::7] = -1
    path = tmp_path / "pool.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("X", data=x[:, 0], chunks=(64, 9, 11), compression="gzip")
        handle.create_dataset("y", data=y)
        handle.attrs["class_names"] = ["rock", "paper", "scissors"]
    return path, x, y


def test_hdf5_is_read_lazily_also_in_workers(hdf5_pool):
    path, x, y = hdf5_pool
    data = get_source("arrays").load(data_dir=path)
    assert data.class_names == ("rock", "paper", "scissors") and data.input_shape == (1, 9, 11)
    np.testing.assert_array_equal(data.labels, np.where(y < 0, UNLABELLED, y))
    positions = np.random.default_rng(1).permutation(300)[:150]
    loader = make_loader(data, positions, batch_size=32, num_workers=2)
    images = torch.cat(list(loader))
    np.testing.assert_allclose(images.numpy(), reference_batch(x, positions), atol=1e-5)
    copy = pickle.loads(pickle.dumps(data))
    torch.testing.assert_close(copy.load(np.array([5, 2])), data.load(np.array([5, 2])))


def test_missing_labels_are_unlabelled_given_class_names(tmp_path):
    np.savez(tmp_path / "pool.npz", X=images_nchw(count=5))
    with pytest.raises(ConfigError, match="has no labels, so pass the class names"):
        get_source("arrays").load(data_dir=tmp_path / "pool.npz")
    data = get_source("arrays").load(data_dir=tmp_path / "pool.npz", classes="a,b")
    assert data.labels.tolist() == [UNLABELLED] * 5 and data.class_names == ("a", "b")


def test_bad_arrays_are_data_errors(tmp_path, hdf5_pool):
    with pytest.raises(DataError, match=r"has y\[2\] = 2, outside the 2 classes"):
        get_source("arrays").load(data_dir=hdf5_pool[0], classes="a,b")
    np.savez(tmp_path / "pool.npz", images=images_nchw(count=2))
    with pytest.raises(DataError, match="pool.npz has no array named X"):
        get_source("arrays").load(data_dir=tmp_path / "pool.npz")
    np.savez(tmp_path / "pool.npz", X=images_nchw(count=2), y=np.zeros(3))
    with pytest.raises(DataError, match=r"has y of shape \(3,\)"):
        get_source("arrays").load(data_dir=tmp_path / "pool.npz")
    (tmp_path / "broken.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match=r"broken.h5 could not be read"):
        get_source("arrays").load(data_dir=tmp_path / "broken.h5")
    (tmp_path / "pool.csv").write_text("X\n")
    with pytest.raises(ConfigError, match="must be an .npz, .h5 or .hdf5 file"):
        get_source("arrays").load(data_dir=tmp_path / "pool.csv")
