"""TFRecord files of ``tf.train.Example`` protobufs, read (and written, for test fixtures) without TensorFlow.

A TFRecord file is a sequence of records, each framed as::

    uint64 length | uint32 masked_crc32c(length) | data[length] | uint32 masked_crc32c(data)

(little-endian), where ``masked(c) = ((c >> 15) | (c << 17)) + 0xA282EAD8 (mod 2**32)`` and CRC32C is
the Castagnoli CRC [1]_. Both checksums are verified, so a truncated or corrupt file raises
:class:`~activelab.errors.DataError` naming the file and the record (numbered from 0) instead of yielding
garbage. The record payload is parsed by hand as a ``tf.train.Example``::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }
    Feature  { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }

with float and int64 lists accepted packed or unpacked, as protobuf requires of a parser.

CRC32C itself comes from Google's C implementation (the ``google-crc32c`` package, which uses the
processor's CRC32 instruction where there is one), so checking a ~46 kB DroughtWatch record takes
microseconds.

References
----------
.. [1] Castagnoli, G., Bräuer, S. & Herrmann, M. (1993). Optimization of cyclic redundancy-check codes
       with 24 and 32 parity bits. IEEE Transactions on Communications 41(6).
.. [2] TensorFlow, ``tensorflow/core/lib/io/record_writer.cc`` and ``core/example/feature.proto``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import google_crc32c
import numpy as np

from activelab.errors import DataError

_MASK_DELTA = 0xA282EAD8


def crc32c(data: bytes) -> int:
    """The CRC-32C (Castagnoli) checksum of ``data``, e.g. ``crc32c(b"123456789") == 0xE3069283``."""
    return google_crc32c.value(data if isinstance(data, bytes) else bytes(data))


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C that TFRecord framing stores (masking guards against CRCs of CRCs)."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


# ----------------------------------------------------------------------------------------- framing


def iter_records(path: Path) -> Iterator[bytes]:
    """Yield the payload of every record in TFRecord file ``path``, verifying both checksums.

    Raises
    ------
    DataError
        When a record is cut short or a checksum does not match (the message names the file and record).
    """
    path = Path(path)
    with open(path, "rb") as handle:
        number = 0
        while header := handle.read(12):
            if len(header) < 12:
                raise DataError(f"{path} is truncated in the header of record {number}; download the file again.")
            length_bytes, length_crc = header[:8], struct.unpack("<I", header[8:])[0]
            if masked_crc32c(length_bytes) != length_crc:
                raise DataError(f"{path} has a bad length checksum in record {number}; the file is corrupt, "
                                "download it again.")
            length = struct.unpack("<Q", length_bytes)[0]
            data = handle.read(length)
            footer = handle.read(4)
            if len(data) < length or len(footer) < 4:
                raise DataError(f"{path} is truncated inside record {number}; download the file again.")
            if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
                raise DataError(f"{path} has a bad data checksum in record {number}; the file is corrupt, "
                                "download it again.")
            yield data
            number += 1


def write_records(path: Path, records: Iterable[bytes]) -> None:
    """Write ``records`` to ``path`` with TFRecord framing (used to build test fixtures)."""
    with open(path, "wb") as handle:
        for data in records:
            length = struct.pack("<Q", len(data))
            handle.write(length + struct.pack("<I", masked_crc32c(length)))
            handle.write(data + struct.pack("<I", masked_crc32c(data)))


# ---------------------------------------------------------------------------------------- protobuf

class MalformedExampleError(ValueError):
    """The bytes are not a well-formed ``tf.train.Example``."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise MalformedExampleError("varint runs past the end of its message")
        byte = buf[pos]
        result |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if not byte & 0x80:
            return result, pos


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield ``(field number, wire type, value)`` for every field of a protobuf message (values are views)."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, pos = buf[pos:pos + width], pos + width
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise MalformedExampleError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise MalformedExampleError("field runs past the end of its message")
        yield number, wire, value


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _list_item(kind: int, wire: int, item: int | memoryview) -> list | np.ndarray:
    """The values in one ``value`` field of a BytesList (kind 1), FloatList (2) or Int64List (3)."""
    if kind == 1 and wire == 2:
        return [bytes(item)]
    if kind == 2 and wire in (2, 5) and len(item) % 4 == 0:
        return np.frombuffer(item, dtype="<f4")  # packed (wire 2) or a single fixed32 (wire 5)
    if kind == 3 and wire == 0:
        return [_signed(item)]
    if kind == 3 and wire == 2:
        values, pos = [], 0
        while pos < len(item):
            raw, pos = _varint(item, pos)
            values.append(_signed(raw))
        return values
    raise MalformedExampleError(f"list value of wire type {wire} in a feature of kind {kind}")


def _parse_feature(buf: memoryview) -> list[bytes] | np.ndarray:
    kind, parts = 1, []
    for number, wire, value in _fields(buf):
        if number in (1, 2, 3) and wire == 2:  # a oneof: the last kind given wins
            kind = number
            parts = [_list_item(kind, item_wire, item) for item_number, item_wire, item in _fields(value)
                     if item_number == 1]
    if kind == 2:
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    values = [value for part in parts for value in part]
    return np.array(values, dtype=np.int64) if kind == 3 else values


def parse_example(record: bytes) -> dict[str, list[bytes] | np.ndarray]:
    """Parse a serialised ``tf.train.Example`` into ``{name: value}``.

    Values are a list of ``bytes`` (bytes_list), a float32 array (float_list) or an int64 array
    (int64_list).

    Raises
    ------
    MalformedExampleError
        When ``record`` is not a valid protobuf of that shape.
    """
    features: dict[str, list[bytes] | np.ndarray] = {}
    for number, wire, features_msg in _fields(memoryview(record)):
        if number != 1 or wire != 2:
            continue
        for entry_number, entry_wire, entry in _fields(features_msg):
            if entry_number != 1 or entry_wire != 2:
                continue
            name, value = None, memoryview(b"")
            for field_number, field_wire, field in _fields(entry):
                if field_number == 1 and field_wire == 2:
                    name = bytes(field).decode("utf-8", errors="replace")
                elif field_number == 2 and field_wire == 2:
                    value = field
            if name is None:
                raise MalformedExampleError("feature map entry without a name")
            features[name] = _parse_feature(value)
    return features


def read_examples(path: Path) -> Iterator[dict[str, list[bytes] | np.ndarray]]:
    """Yield the parsed ``tf.train.Example`` of every record of ``path`` (see :func:`parse_example`)."""
    for number, record in enumerate(iter_records(path)):
        try:
            yield parse_example(record)
        except MalformedExampleError as error:
            raise DataError(f"{path} record {number} is not a valid tf.train.Example ({error}); "
                            "the file is corrupt or not a TFRecord of examples.") from None


def _key(number: int, wire: int) -> bytes:
    return _encode_varint(number << 3 | wire)


def _encode_varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _delimited(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _encode_varint(len(payload)) + payload


def encode_example(features: Mapping[str, bytes | list[bytes] | np.ndarray]) -> bytes:
    """Serialise ``{name: value}`` as a ``tf.train.Example``.

    bytes become a bytes_list, float arrays a float_list and integer arrays an int64_list; lists are
    written packed, as TensorFlow does. Used to build test fixtures byte for byte.
    """
    entries = b""
    for name, value in features.items():
        if isinstance(value, bytes):
            value = [value]
        if isinstance(value, list) and all(isinstance(item, bytes) for item in value):
            feature = _delimited(1, b"".join(_delimited(1, item) for item in value))
        else:
            array = np.asarray(value).ravel()
            if np.issubdtype(array.dtype, np.floating):
                feature = _delimited(2, _delimited(1, array.astype("<f4").tobytes()))
            else:
                feature = _delimited(3, _delimited(1, b"".join(_encode_varint(int(v)) for v in array)))
        entries += _delimited(1, _delimited(1, name.encode()) + _delimited(2, feature))
    return _delimited(1, entries)
