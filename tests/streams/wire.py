"""A raw Kafka-protocol client built on kio, for tests that must craft exact requests:
resent sequences, corrupt batches, malformed frames."""

from __future__ import annotations

import datetime
import io
import socket
import struct
from typing import Any

from kio.index import load_response_schema
from kio.records.schema import NewRecordBatch, Record
from kio.records.writers import write_new_batch
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import i8, i16, i32, i64


class WireClient:
    def __init__(self, bootstrap: str, timeout: float = 10.0) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self._correlation = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def encode(self, request: Any) -> bytes:
        self._correlation += 1
        header_type = type(request).__header_schema__
        header = header_type(
            request_api_key=type(request).__api_key__,
            request_api_version=type(request).__version__,
            correlation_id=self._correlation,
            client_id="wire-test",
        )
        buffer = io.BytesIO()
        entity_writer(header_type)(buffer, header)
        entity_writer(type(request))(buffer, request)
        body = buffer.getvalue()
        return struct.pack(">i", len(body)) + body

    def request(self, request: Any) -> Any:
        self.sock.sendall(self.encode(request))
        return self.read_response(type(request).__api_key__, type(request).__version__)

    def read_response(self, api_key: int, version: int) -> Any:
        (size,) = struct.unpack(">i", self.recv_exactly(4))
        frame = self.recv_exactly(size)
        response_type = load_response_schema(api_key, version)
        header_type = response_type.__header_schema__
        _header, used = entity_reader(header_type)(frame, 0)
        body, _ = entity_reader(response_type)(frame, used)
        return body

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exactly(self, size: int) -> bytes:
        chunks = []
        while size:
            chunk = self.sock.recv(size)
            if not chunk:
                raise ConnectionError("connection closed by broker")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def closed_by_peer(self, wait: float = 5.0) -> bool:
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def record_batch(
    values: list[bytes],
    *,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> bytes:
    """An uncompressed magic-v2 batch, CRC included."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    batch = NewRecordBatch(
        producer_id=i64(producer_id),
        producer_epoch=i16(producer_epoch),
        base_sequence=i32(base_sequence),
        attributes=i16(0),
        records=tuple(
            Record(
                attributes=i8(0),
                timestamp=now,  # type: ignore[arg-type]
                offset=i64(i),
                key=None,
                value=v,
                headers=(),
            )
            for i, v in enumerate(values)
        ),
    )
    buffer = io.BytesIO()
    write_new_batch(buffer, batch)
    return buffer.getvalue()
