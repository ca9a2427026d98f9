"""Content-hash cache of per-document results, written batch by batch so a run can resume.

A document's key hashes everything its result depends on: the text and the identity
of the model, the backend and the settings. A rerun computes only keys it has not
stored; a run killed half way leaves every finished batch behind as one Parquet shard
(written to a temporary name, then renamed, so a shard is either whole or absent).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def content_key(text: str, identity: dict[str, Any]) -> str:
    """sha256 of the text and the (JSON-serialisable) identity of what produces the result."""
    payload = json.dumps({"text": text, "identity": identity}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ShardCache:
    """Results of one stage (e.g. 'extract', 'embed'): a folder of Parquet shards keyed by `key`."""

    def __init__(self, root: str | Path, stage: str):
        self.dir = Path(root) / stage
        self.dir.mkdir(parents=True, exist_ok=True)

    def load(self) -> pd.DataFrame:
        """All stored rows, one per key (the newest shard wins); unreadable shards are skipped."""
        frames = []
        for shard in sorted(self.dir.glob("part-*.parquet"), key=lambda p: p.stat().st_mtime_ns):
            try:
                frames.append(pd.read_parquet(shard))
            except Exception as err:  # a damaged shard only costs recomputation
                log.warning("cache shard %s is unreadable (%s); its documents will be recomputed", shard, err)
        if not frames:
            return pd.DataFrame({"key": pd.Series(dtype=str)})
        table = pd.concat(frames, ignore_index=True)
        return table.drop_duplicates("key", keep="last").reset_index(drop=True)

    def write(self, rows: pd.DataFrame) -> Path:
        """Store one finished batch (must hold a `key` column) atomically."""
        if "key" not in rows.columns:
            raise ValueError("cache rows need a 'key' column")
        name = f"part-{uuid.uuid4().hex}.parquet"
        tmp = self.dir / f".{name}.tmp"
        rows.to_parquet(tmp, index=False)
        os.replace(tmp, self.dir / name)
        return self.dir / name


def frame_to_vectors(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Stored embedding rows (key, embedding) as float32 vectors by key."""
    return {k: np.asarray(v, dtype=np.float32) for k, v in zip(rows["key"], rows["embedding"])}
