"""Broker-wide facts kept across restarts: the cluster id and producer-id allocation."""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path

_PRODUCER_ID_BLOCK = 1000


class BrokerMeta:
    """``meta.json`` in the data directory.

    Producer ids are handed out from blocks; the end of the current block is written
    (and fsynced) before any id in it is used, so no id is reused after a crash.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "meta.json"
        data = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.cluster_id: str = data.get("cluster_id") or _new_cluster_id()
        self._block_end: int = int(data.get("producer_id_block_end", 0))
        self._next_producer_id = self._block_end
        self._save()

    def next_producer_id(self) -> int:
        if self._next_producer_id >= self._block_end:
            self._block_end += _PRODUCER_ID_BLOCK
            self._save()
        producer_id = self._next_producer_id
        self._next_producer_id += 1
        return producer_id

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        body = {"cluster_id": self.cluster_id, "producer_id_block_end": self._block_end}
        with open(tmp, "w") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def _new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
