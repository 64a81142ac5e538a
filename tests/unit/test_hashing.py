"""The producer helper: PDQ conformance with Meta's reference images, video sampling."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest

from streamsafe.hashing.frames import hash_image_file, hash_video
from streamsafe.matching.dihedral import TRANSFORMS, VARIANTS
from streamsafe.matching.signal_types import PDQ

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "data" / "pdq-reference"
needs_reference = pytest.mark.skipif(
    not (REFERENCE / "expected.csv").exists(),
    reason=f"PDQ reference data not found at {REFERENCE} (it lives in the shared folder next to the repo)",
)


def reference_rows() -> list[dict[str, str]]:
    if not (REFERENCE / "expected.csv").exists():
        return []
    with (REFERENCE / "expected.csv").open() as handle:
        return list(csv.DictReader(handle))


@needs_reference
@pytest.mark.parametrize("row", reference_rows(), ids=lambda r: r["path"])
def test_pdq_within_16_bits_of_meta_reference(row):
    hashes = hash_image_file(REFERENCE / row["path"])
    assert PDQ().distance(hashes.pdq, row["pdq_hex"]) <= 16
    assert hashes.md5 == hashlib.md5((REFERENCE / row["path"]).read_bytes()).hexdigest()
    assert 0 <= hashes.pdq_quality <= 100


def dihedral_rows() -> list[dict[str, str]]:
    """Meta's bridge picture in its eight orientations, in Meta's order (the file names
    number them: 1 original .. 8 flip-minus-1)."""
    return sorted((r for r in reference_rows() if r["path"].startswith("images/dih/")), key=lambda r: r["path"])


@needs_reference
def test_every_dihedral_variant_is_within_16_bits_of_metas_hash_for_that_orientation():
    rows = dihedral_rows()
    assert len(rows) == len(TRANSFORMS)
    original = hash_image_file(REFERENCE / rows[0]["path"], dihedral=True)
    assert original.pdq == hash_image_file(REFERENCE / rows[0]["path"]).pdq  # pdq is the identity hash
    computed = [original.pdq] + [original.pdq_dihedral[name] for name in VARIANTS]
    distances = {name: PDQ().distance(ours, row["pdq_hex"])
                 for name, ours, row in zip(TRANSFORMS, computed, rows, strict=True)}
    assert all(d <= 16 for d in distances.values()), distances


@needs_reference
def test_the_dihedral_reference_files_are_named_in_metas_order():
    names = [Path(r["path"]).stem.split("-", 2)[2].replace("-", "") for r in dihedral_rows()]
    assert names == ["original", "rotate90", "rotate180", "rotate270", "flipx", "flipy", "flipplus1",
                     "flipminus1"]
    assert [t.replace("_", "") for t in TRANSFORMS[1:]] == names[1:]


def write_video(path: Path, seconds: int, fps: int = 10) -> None:
    import av

    rng = np.random.default_rng(1)
    scenes = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(seconds)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 128, 128, "yuv420p"
        for i in range(seconds * fps):
            image = np.kron(scenes[i // fps], np.ones((2, 2, 1), dtype=np.uint8))
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_is_sampled_at_the_requested_rate(tmp_path):
    video = tmp_path / "clip.mp4"
    write_video(video, seconds=4)
    one_per_second = list(hash_video(video, fps=1.0))
    assert [f.frame_ts_ms for f in one_per_second] == [0, 1000, 2000, 3000]
    assert [f.frame_seq for f in one_per_second] == [0, 1, 2, 3]
    assert len({f.pdq for f in one_per_second}) == 4  # four different scenes
    assert len(list(hash_video(video, fps=2.0))) == 8
    frame = one_per_second[1].as_frame(seq=7, ts_ms=1_790_000_001_000)
    assert frame == {"seq": 7, "ts_ms": 1_790_000_001_000, "pdq": one_per_second[1].pdq,
                     "pdq_quality": one_per_second[1].pdq_quality, "md5": one_per_second[1].md5,
                     "sha256": one_per_second[1].sha256}
