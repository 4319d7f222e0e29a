"""MNIST-style idx datasets: the local search, and downloads from a real HTTP server on 127.0.0.1.

(torchvision's download_url cannot read file:// URLs: it asks the response for a length they lack.)
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import re
import socket
import struct
import threading

import numpy as np
import pytest

from activelab.data.sources import cache_root, get_source
from activelab.data.sources import mnist_family
from activelab.errors import DatasetNotFoundError

TRAIN, TEST = 6, 3


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (uint8) in the idx format, gzipped like the official files."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return gzip.compress(header + array.tobytes(), mtime=0)


@pytest.fixture
def mirror(tmp_path):
    """The four files of a tiny idx dataset in ``mirror/files/`` and a spec whose MD5s match them."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (TRAIN, 5, 4), dtype=np.uint8),
              "train-labels-idx1-ubyte": np.arange(TRAIN, dtype=np.uint8) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (TEST, 5, 4), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": np.arange(TEST, dtype=np.uint8)}
    folder = tmp_path / "mirror" / "files"
    folder.mkdir(parents=True)
    md5 = {}
    for stem, array in arrays.items():
        content = idx_bytes(array)
        (folder / f"{stem}.gz").write_bytes(content)
        md5[f"{stem}.gz"] = hashlib.md5(content).hexdigest()
    spec = mnist_family.IdxDatasetSpec(name="tiny-mnist", title="Tiny-MNIST", urls=(), md5=md5,
                                       class_names=tuple(str(digit) for digit in range(10)), mean=0.5, std=0.25)
    return spec, folder, arrays


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(mirror):
    """A real HTTP server on 127.0.0.1 serving the mirror folder's parent; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(mirror[1].parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def with_urls(spec, *urls, md5=None):
    return mnist_family.IdxDatasetSpec(**{**spec.__dict__, "urls": urls, "md5": md5 or spec.md5})


def one_sentence(message: str) -> bool:
    return message.endswith(".") and re.search(r"[.;]\s+[A-Z]", message) is None


def test_download_over_http_tries_the_next_mirror_and_checks_md5(mirror, server):
    spec, folder, arrays = mirror
    spec = with_urls(spec, server + "missing/", server + "files/")  # the first mirror answers 404
    data = mnist_family.load(spec)
    target = cache_root() / spec.name
    assert sorted(path.name for path in target.iterdir()) == sorted(spec.md5)  # no temporary files left
    for name in spec.md5:
        assert (target / name).read_bytes() == (folder / name).read_bytes()
    assert len(data) == TRAIN + TEST and data.predefined_test.sum() == TEST
    np.testing.assert_array_equal(data.labels[:TRAIN], arrays["train-labels-idx1-ubyte"])
    expected = (arrays["t10k-images-idx3-ubyte"][1].astype(np.float32) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(data.load(np.array([TRAIN + 1]))[0, 0].numpy(), expected, atol=1e-6)
    assert socket.getdefaulttimeout() is None  # the download's timeout does not outlive it


def test_wrong_md5_is_one_sentence_and_leaves_nothing_behind(mirror, server):
    spec, _, _ = mirror
    wrong = {**spec.md5, "t10k-images-idx3-ubyte.gz": "0" * 32}
    spec = with_urls(spec, server + "files/", md5=wrong)
    with pytest.raises(DatasetNotFoundError) as caught:
        mnist_family.download(spec)
    message = str(caught.value)
    actual = mirror[0].md5["t10k-images-idx3-ubyte.gz"]
    assert f"t10k-images-idx3-ubyte.gz sent a file whose MD5 is {actual}, not {'0' * 32}" in message
    assert "ACTIVELAB_DATA" in message and "--data-dir" not in message and one_sentence(message)
    names = sorted(path.name for path in (cache_root() / spec.name).iterdir())
    assert names == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]  # fetched before the bad one


def test_a_damaged_local_file_is_downloaded_again(mirror, server):
    spec, folder, _ = mirror
    target = cache_root() / spec.name
    target.mkdir(parents=True)
    (target / "train-labels-idx1-ubyte.gz").write_bytes(b"truncated")
    mnist_family.download(with_urls(spec, server + "files/"))
    assert (target / "train-labels-idx1-ubyte.gz").read_bytes() == (folder / "train-labels-idx1-ubyte.gz").read_bytes()


def test_unreachable_mirrors_are_one_sentence(mirror):
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spec = with_urls(mirror[0], f"http://127.0.0.1:{port}/a/", f"http://127.0.0.1:{port}/b/")
    with pytest.raises(DatasetNotFoundError, match=r"Tiny-MNIST is not on this machine and could not be downloaded "
                                                   r"\(http://127.0.0.1:\d+/a/train-images-idx3-ubyte.gz could not be "
                                                   r"reached .*; http://127.0.0.1:\d+/b/") as caught:
        mnist_family.download(spec)
    assert one_sentence(str(caught.value))


def test_local_copies_are_found_in_the_data_roots_in_order(mirror, isolated_roots):
    spec, folder, _ = mirror
    assert mnist_family.locate(spec, None) is None
    cached = isolated_roots / "cache" / spec.name
    cached.mkdir(parents=True)
    for name in spec.md5:
        (cached / name).write_bytes((folder / name).read_bytes())
    assert mnist_family.locate(spec, None) == cached
    preferred = isolated_roots / "data" / spec.name  # $ACTIVELAB_DATA comes before the cache
    preferred.parent.mkdir(parents=True)
    folder.rename(preferred)
    assert mnist_family.locate(spec, None) == preferred
    assert len(mnist_family.load(spec, download_missing=False)) == TRAIN + TEST


def test_missing_files_message_suits_run_and_fetch(mirror, isolated_roots):
    with pytest.raises(DatasetNotFoundError) as caught:
        mnist_family.load(mirror[0], download_missing=False)
    message = str(caught.value)
    assert str(isolated_roots / "data" / "tiny-mnist") in message and "/usr/share/datasets/tiny-mnist" in message
    assert "ACTIVELAB_DATA" in message and "--data-dir" not in message and one_sentence(message)
    with pytest.raises(DatasetNotFoundError, match="point --data-dir at the folder"):
        mnist_family.load(mirror[0], isolated_roots)


def test_fashion_mnist_source_is_registered_with_the_official_checksums():
    source = get_source("fashion-mnist")
    assert source.classes == 10 and source.options == ("download_missing",)
    assert mnist_family.FASHION.md5["train-images-idx3-ubyte.gz"] == "8d4fb7e6c68d591d4c3dfef9ec88bf0d"


def test_an_unwritable_cache_is_one_sentence(mirror, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(DatasetNotFoundError, match=r"cannot be downloaded into .*set ACTIVELAB_CACHE") as caught:
        mnist_family.download(mirror[0], blocker / "tiny-mnist")
    assert one_sentence(str(caught.value))
