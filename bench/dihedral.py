"""What dihedral PDQ variants cost, next to the same work without them, in one run.

    python bench/dihedral.py [--frames 100] [--resolutions 640x360,1280x720,1920x1080]
                             [--bank 100000] [--messages 5000] [--json]

* producer: milliseconds per frame for ``hash_image_array`` (``pdqhash.compute``: PDQ
  and quality) and ``hash_image_array_dihedral`` (``pdqhash.compute_dihedral``: all
  eight variants from one pass, what ``streamsafe hash --dihedral`` runs), on the
  same synthetic RGB frames at each resolution (PDQ's cost depends on the size, not the
  content), with the ratio;
* screen: microseconds per single-frame ``livestream.frame-hashes`` message through
  ``FrameScreen.screen`` (decode, validate, match, in the pre-filter's batches of 500)
  against a bank of ``--bank`` random PDQ entries, for version 1 messages (``pdq``
  only) and version 2 ones (``pdq`` + seven variants, all probed: the default policy
  counts every transform for authority banks), frames that match nothing (the common
  case), with the ratio.

A row that measured nothing (zero frames or messages) says so instead of a number.
``--json`` prints one line: ``{"hashing": [...], "screen": {...}}``. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import orjson

from streamsafe.events.contract import FRAME_HASHES, load_contract
from streamsafe.events.dead_letter import SourceRecord
from streamsafe.events.decode import InputDecoder
from streamsafe.events.models import BankEntry
from streamsafe.hashing.frames import hash_image_array, hash_image_array_dihedral
from streamsafe.matching.banks import HashBanks
from streamsafe.matching.dihedral import VARIANTS
from streamsafe.pipeline.screen import FrameScreen
from streamsafe.policy.loader import load_policy

NOT_MEASURED = "not measured: nothing was timed"


def per_item(seconds: float, count: int, unit: float) -> float | str:
    """Time per item in ``unit`` (1e3: ms, 1e6: us), or say that nothing was measured."""
    return round(seconds / count * unit, 3) if count > 0 else NOT_MEASURED


def ratio(a: float | str, b: float | str) -> float | str:
    return round(b / a, 2) if isinstance(a, float) and isinstance(b, float) and a > 0 else NOT_MEASURED


def synthetic_frames(width: int, height: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth gradients with noise: a picture PDQ finds detail in (quality well above 50)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    for _ in range(count):
        fx, fy = rng.uniform(1, 8, 2)
        base = 127 + 100 * np.sin(x / width * fx * np.pi) * np.cos(y / height * fy * np.pi)
        rgb = base[..., None] + rng.normal(0, 20, (height, width, 3))
        frames.append(np.clip(rgb, 0, 255).astype(np.uint8))
    return frames


def bench_hashing(resolution: str, frames: int) -> dict[str, Any]:
    width, height = (int(v) for v in resolution.split("x"))
    images = synthetic_frames(width, height, frames)
    if images:
        hash_image_array(images[0]), hash_image_array_dihedral(images[0])  # load and warm, untimed
    t0 = time.perf_counter()
    for rgb in images:
        hash_image_array(rgb)
    plain = per_item(time.perf_counter() - t0, len(images), 1e3)
    t0 = time.perf_counter()
    for rgb in images:
        hash_image_array_dihedral(rgb)
    dihedral = per_item(time.perf_counter() - t0, len(images), 1e3)
    return {"resolution": resolution, "frames": len(images), "pdq_ms_per_frame": plain,
            "dihedral_ms_per_frame": dihedral, "ratio": ratio(plain, dihedral)}


def bench_screen(bank_size: int, messages: int, seed: int = 1) -> dict[str, Any]:
    rng = np.random.default_rng(seed)

    def hexes(n: int) -> list[str]:
        raw = rng.integers(0, 256, size=(n, 32), dtype=np.uint8).tobytes()
        return [raw[i : i + 32].hex() for i in range(0, len(raw), 32)]

    banks = HashBanks()
    banks.add_many(BankEntry(f"ncmec:{i}", "ncmec", "pdq", h) for i, h in enumerate(hexes(bank_size)))
    policy = load_policy()
    screen = FrameScreen(InputDecoder(load_contract(), 65536), banks, lambda: policy)
    out: dict[str, Any] = {"bank": bank_size, "messages": messages}
    for version in (1, 2):
        records = []
        for i, pdq in enumerate(hexes(messages)):
            frame: dict[str, Any] = {"seq": i, "ts_ms": 1_790_000_000_000 + i, "pdq": pdq, "pdq_quality": 90}
            if version == 2:
                frame["pdq_dihedral"] = dict(zip(VARIANTS, hexes(len(VARIANTS)), strict=True))
            value = orjson.dumps({"schema_version": version, "stream_id": f"s{i % 100}", "frames": [frame]})
            records.append((f"s{i % 100}".encode(), value, SourceRecord(FRAME_HASHES, 0, i, 1_790_000_000_000)))
        screen.screen(records[:50])  # kernels loaded, untimed
        t0 = time.perf_counter()
        for lo in range(0, len(records), 500):
            assert all(s.accepted for s in screen.screen(records[lo : lo + 500]))
        out[f"v{version}_us_per_message"] = per_item(time.perf_counter() - t0, len(records), 1e6)
    out["ratio"] = ratio(out["v1_us_per_message"], out["v2_us_per_message"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100, help="frames hashed per resolution and way")
    parser.add_argument("--resolutions", default="640x360,1280x720,1920x1080")
    parser.add_argument("--bank", type=int, default=100_000, help="PDQ entries in the screen's bank")
    parser.add_argument("--messages", type=int, default=5_000, help="messages screened per version")
    parser.add_argument("--json", action="store_true", help="one JSON line only")
    args = parser.parse_args(argv)
    hashing = [bench_hashing(r, args.frames) for r in args.resolutions.split(",") if r]
    screen = bench_screen(args.bank, args.messages)
    if args.json:
        print(json.dumps({"hashing": hashing, "screen": screen}))
        return 0
    print("producer: PDQ per frame, without and with the seven other dihedral variants")
    for row in hashing:
        print(f"  {row['resolution']:>10}  pdq {row['pdq_ms_per_frame']} ms  dihedral {row['dihedral_ms_per_frame']} ms"
              f"  ratio {row['ratio']}  ({row['frames']} frames)")
    print(f"screen: one-frame messages, bank of {screen['bank']:,} PDQ entries, {screen['messages']:,} messages each")
    print(f"  version 1 (pdq) {screen['v1_us_per_message']} us  version 2 (pdq + 7 variants) "
          f"{screen['v2_us_per_message']} us  ratio {screen['ratio']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
