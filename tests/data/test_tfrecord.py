"""The TFRecord reader: CRC32C, framing and hand-parsed tf.train.Example protobufs."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activelab.data.tfrecord import (MalformedExampleError, crc32c, encode_example, iter_records, masked_crc32c,
                                     parse_example, read_examples, write_records)
from activelab.errors import DataError


def bitwise_crc32c(data: bytes) -> int:
    """The textbook bit-at-a-time CRC-32C, as an independent reference."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_known_vectors():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros
    assert crc32c(b"\xff" * 32) == 0x62A8AB43  # RFC 3720 B.4: 32 bytes of ones
    assert crc32c(bytes(range(32))) == 0x46DD794E  # RFC 3720 B.4: incrementing bytes


@pytest.mark.parametrize("size", [1, 7, 8, 9, 255, 256, 4097, 46475])
def test_crc32c_matches_reference_on_long_and_unaligned_data(size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert crc32c(data) == bitwise_crc32c(data)
    assert crc32c(memoryview(data)) == crc32c(bytearray(data)) == crc32c(data)  # any bytes-like object


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=1500))
def test_crc32c_matches_reference_on_any_bytes(data):
    assert crc32c(data) == bitwise_crc32c(data)


def test_masked_crc_follows_the_tensorflow_formula():
    crc = crc32c(b"abc")
    assert masked_crc32c(b"abc") == ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def test_records_are_framed_byte_for_byte(tmp_path):
    path = tmp_path / "one.tfrecord"
    write_records(path, [b"hello"])
    length = struct.pack("<Q", 5)
    assert path.read_bytes() == (length + struct.pack("<I", masked_crc32c(length)) + b"hello"
                                 + struct.pack("<I", masked_crc32c(b"hello")))


def test_records_round_trip_including_empty_and_large(tmp_path):
    records = [b"", b"x", bytes(range(256)) * 300]
    path = tmp_path / "three.tfrecord"
    write_records(path, records)
    assert list(iter_records(path)) == records


def test_hand_encoded_example_is_parsed():
    # Example{features{feature{key:"label" value{int64_list{value:[1]}}}}}, encoded by hand from feature.proto
    record = bytes.fromhex("0a10" "0a0e" "0a05" + b"label".hex() + "1205" "1a03" "0a0101")
    parsed = parse_example(record)
    assert list(parsed) == ["label"]
    assert parsed["label"].dtype == np.int64 and parsed["label"].tolist() == [1]


def test_unpacked_lists_are_parsed():
    floats = b"".join(b"\x0d" + struct.pack("<f", value) for value in (1.5, -2.0))  # field 1, wire 5, twice
    ints = b"\x08\x07" + b"\x08" + b"\xff" * 9 + b"\x01"  # field 1, wire 0: 7 and -1
    feature_f = b"\x12" + bytes([len(floats)]) + floats
    feature_i = b"\x1a" + bytes([len(ints)]) + ints

    def entry(name: bytes, feature: bytes) -> bytes:
        body = b"\x0a" + bytes([len(name)]) + name + b"\x12" + bytes([len(feature)]) + feature
        return b"\x0a" + bytes([len(body)]) + body

    entries = entry(b"f", feature_f) + entry(b"i", feature_i)
    parsed = parse_example(b"\x0a" + bytes([len(entries)]) + entries)
    assert parsed["f"].tolist() == [1.5, -2.0]
    assert parsed["i"].tolist() == [7, -1]


def test_encode_and_parse_round_trip_every_kind():
    floats = np.linspace(-1, 1, 4225, dtype=np.float32)
    features = {"raw": bytes(range(200)), "several": [b"a", b"", b"bc"], "floats": floats,
                "ints": np.array([0, 3, -5, 2**40, -(2**63)], dtype=np.int64)}
    parsed = parse_example(encode_example(features))
    assert parsed["raw"] == [bytes(range(200))]
    assert parsed["several"] == [b"a", b"", b"bc"]
    np.testing.assert_array_equal(parsed["floats"], floats)
    assert parsed["ints"].tolist() == [0, 3, -5, 2**40, -(2**63)]


def test_garbage_is_not_an_example():
    with pytest.raises(MalformedExampleError):
        parse_example(b"\x0a\xff\xff\xff")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_parse_or_raise_malformed(data):
    valid = encode_example({"b": b"xy", "f": np.array([1.0], dtype=np.float32), "i": np.array([3])})
    for record in (data, valid[:len(data) % len(valid)] + data):
        try:
            parsed = parse_example(record)
        except MalformedExampleError:
            continue
        assert isinstance(parsed, dict)


def write_three(tmp_path):
    path = tmp_path / "part-r-00000"
    write_records(path, [encode_example({"label": np.array([i])}) for i in range(3)])
    return path


def test_read_examples_yields_every_record(tmp_path):
    assert [example["label"][0] for example in read_examples(write_three(tmp_path))] == [0, 1, 2]


def test_truncated_record_names_file_and_record(tmp_path):
    path = write_three(tmp_path)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match=r"part-r-00000 is truncated inside record 2"):
        list(iter_records(path))


def test_truncated_header_names_file_and_record(tmp_path):
    path = write_three(tmp_path)
    size = len(next(iter_records(path))) + 16
    path.write_bytes(path.read_bytes()[:size + 5])
    with pytest.raises(DataError, match=r"part-r-00000 is truncated in the header of record 1"):
        list(iter_records(path))


def test_bad_data_checksum_names_file_and_record(tmp_path):
    path = write_three(tmp_path)
    data = bytearray(path.read_bytes())
    size = len(next(iter_records(path))) + 16
    data[size + 12 + 2] ^= 0x01  # a byte inside the data of record 1
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"part-r-00000 has a bad data checksum in record 1"):
        list(iter_records(path))


def test_bad_length_checksum_names_file_and_record(tmp_path):
    path = write_three(tmp_path)
    data = bytearray(path.read_bytes())
    data[0] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"part-r-00000 has a bad length checksum in record 0"):
        list(iter_records(path))


def test_record_that_is_not_an_example_names_file_and_record(tmp_path):
    path = tmp_path / "part-r-00001"
    write_records(path, [encode_example({"label": np.array([1])}), b"\x0a\xff\xff\xff"])
    with pytest.raises(DataError, match=r"part-r-00001 record 1 is not a valid tf.train.Example"):
        list(read_examples(path))
