"""DVS128 Gesture and CIFAR10-DVS readers: raw AEDAT files -> event-count frames [N, T, 2, 128, 128].

Events are split into T frames by event count and integrated into per-pixel counts exactly as
spikingjelly 2.0 does with ``split_by='number'`` (``cal_fixed_frames_number_segment_index`` and
``integrate_events_segment_to_frame``), then saturated at 255 and stored as uint8.
The readers are hand-written because spikingjelly's dataset package imports torchvision at module
level, and torchvision does not load with the CPU torch build used here.

Frames are computed once and cached as ``<cache_dir>/frames_number_{T}_split_by_number/<name>.npz``
(arrays train_inputs, train_labels, test_inputs, test_labels); ``cache_dir`` defaults to ``data_dir``.
The cache is written under a temporary name and renamed, so a half-written file is never loaded.
The cache is not invalidated when the raw files change: delete it to rebuild.
"""

import os
import re
import struct
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from slt.data.base import Dataset, DatasetInfo, Split
from slt.errors import InputError

SENSOR_SIZE = 128  # both datasets were recorded with a 128x128 DVS

GESTURE_INFO = DatasetInfo(
    name="dvs128-gesture",
    num_classes=11,
    in_channels=2,
    image_size=SENSOR_SIZE,
    is_event=True,
    mean=(0.0, 0.0),
    std=(1.0, 1.0),
    flip=False,  # mirroring swaps left- and right-hand gestures
)
CIFAR10_DVS_INFO = DatasetInfo(
    name="cifar10-dvs",
    num_classes=10,
    in_channels=2,
    image_size=SENSOR_SIZE,
    is_event=True,
    mean=(0.0, 0.0),
    std=(1.0, 1.0),
    flip=True,
)

GESTURE_SUBDIR = "DvsGesture"  # what DvsGesture.tar.gz extracts to
GESTURE_TRIALS = {"train": "trials_to_train.txt", "test": "trials_to_test.txt"}
CIFAR10_DVS_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR10_DVS_TEST_PER_CLASS = 100  # common convention (spikingjelly's CIFAR10DVSTEBNSplit)

_AEDAT31_PACKET = struct.Struct("<hhiiiiii")  # type, source, size, tsOffset, tsOverflow, capacity, number, valid
_AEDAT31_POLARITY = 1
_CACHE_KEYS = ("train_inputs", "train_labels", "test_inputs", "test_labels")


class Events(NamedTuple):
    """Decoded events, one entry per event: t (int64, microseconds), x, y (int64), p (uint8, 0/1)."""

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    p: np.ndarray


# ---------------------------------------------------------------------------------------------
# File formats


def _corrupt(path: Path, problem: str) -> InputError:
    return InputError("data_dir", f"{path} is corrupt: {problem}")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputError("data_dir", f"cannot read {path}: {e.strerror or e}") from None


def _skip_hash_lines(raw: bytes) -> int:
    """Offset of the first byte after the leading lines that start with '#'."""
    pos = 0
    while raw.startswith(b"#", pos):
        end = raw.find(b"\n", pos)
        if end < 0:
            return len(raw)
        pos = end + 1
    return pos


def read_aedat31(path: str | Path) -> Events:
    """Polarity events of an AEDAT 3.1 file (DVS128 Gesture).

    Layout: ASCII '#' header lines ending with '#!END-HEADER\\r\\n', then packets of a 28-byte
    little-endian header (eventType int16, eventSource int16, eventSize, eventTSOffset,
    eventTSOverflow, eventCapacity, eventNumber, eventValid: int32) and eventCapacity*eventSize bytes.
    Polarity events (type 1, 8 bytes): uint32 data (bit 1 polarity, bits 2-16 y, bits 17-31 x) and
    uint32 timestamp; the full timestamp is timestamp | eventTSOverflow << 31. Other packet types are
    skipped. Like spikingjelly, all eventCapacity events are decoded and the valid bit is not checked.
    """
    path = Path(path)
    raw = _read_bytes(path)
    pos = 0
    while True:  # header: '#' lines up to '#!END-HEADER'
        if not raw.startswith(b"#", pos):
            raise _corrupt(path, "no '#!END-HEADER' line; expected an AEDAT 3.1 file ('#' header, then packets)")
        end = raw.find(b"\n", pos)
        if end < 0:
            raise _corrupt(path, "header ends without '#!END-HEADER'; expected an AEDAT 3.1 file")
        line, pos = raw[pos:end], end + 1
        if line.rstrip(b"\r") == b"#!END-HEADER":
            break

    words, overflows, counts = [], [], []
    while pos < len(raw):
        if len(raw) - pos < _AEDAT31_PACKET.size:
            raise _corrupt(path, f"truncated packet header at byte {pos}; expected 28-byte packet headers")
        etype, _, esize, _, overflow, capacity, _, _ = _AEDAT31_PACKET.unpack_from(raw, pos)
        pos += _AEDAT31_PACKET.size
        if esize < 0 or capacity < 0 or overflow < 0:
            raise _corrupt(path, f"packet header at byte {pos - 28} has negative size, capacity or overflow")
        length = esize * capacity
        if pos + length > len(raw):
            left = len(raw) - pos
            raise _corrupt(path, f"packet at byte {pos - 28} needs {length} bytes, only {left} left (truncated?)")
        if etype == _AEDAT31_POLARITY and capacity:
            if esize != 8:
                raise _corrupt(path, f"polarity packet with eventSize {esize}; expected 8")
            words.append(np.frombuffer(raw, dtype="<u4", count=2 * capacity, offset=pos))
            overflows.append(overflow)
            counts.append(capacity)
        pos += length

    if not words:
        empty = np.zeros(0, np.int64)
        return Events(empty, empty.copy(), empty.copy(), np.zeros(0, np.uint8))
    pairs = np.concatenate(words).reshape(-1, 2)
    data = pairs[:, 0].astype(np.int64)
    t = pairs[:, 1].astype(np.int64) | (np.repeat(np.asarray(overflows, np.int64), counts) << 31)
    x = (data >> 17) & 0x7FFF
    y = (data >> 2) & 0x7FFF
    p = ((data >> 1) & 1).astype(np.uint8)
    return Events(t, x, y, p)


def read_cifar10_dvs_aedat(path: str | Path) -> Events:
    """Events of a CIFAR10-DVS file (jAER AEDAT 2.0), decoded as spikingjelly's cifar10_dvs.py does.

    Layout: '#' header lines, then big-endian 8-byte events (uint32 address, uint32 timestamp).
    Address bits: 0 polarity, 1-7 raw x, 8-14 raw y. The returned frame coordinates are transposed
    and flipped like spikingjelly's: x = 127 - raw_y, y = 127 - raw_x, p = 1 - raw_polarity.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if not raw.startswith(b"#!AER-DAT"):
        raise _corrupt(path, "does not start with '#!AER-DAT'; expected a jAER AEDAT 2.0 file")
    body = memoryview(raw)[_skip_hash_lines(raw) :]
    if len(body) % 8:
        raise _corrupt(path, f"{len(body)} bytes of events is not a whole number of 8-byte events (truncated?)")
    pairs = np.frombuffer(body, dtype=">u4").reshape(-1, 2)
    addr = pairs[:, 0].astype(np.int64)
    raw_x = (addr & 0xFE) >> 1
    raw_y = (addr & 0x7F00) >> 8
    raw_p = addr & 1
    t = pairs[:, 1].astype(np.int64)
    return Events(t, (SENSOR_SIZE - 1) - raw_y, (SENSOR_SIZE - 1) - raw_x, (1 - raw_p).astype(np.uint8))


# ---------------------------------------------------------------------------------------------
# Frames


def segment_bounds(n_events: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """spikingjelly's split_by='number' segments: j_l[i] = i*(N//T), j_r[i] = j_l[i] + N//T, last j_r = N."""
    di = n_events // frames
    j_l = np.arange(frames, dtype=np.int64) * di
    j_r = j_l + di
    j_r[-1] = n_events
    return j_l, j_r


def integrate_frames_by_number(
    t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray, frames: int, H: int, W: int
) -> np.ndarray:
    """Event counts in `frames` equal-count segments (see segment_bounds): uint8 [frames, 2, H, W].

    Channel 0 counts p == 0, channel 1 counts p != 0; frame[c, y, x]. Counts saturate at 255.
    `t` only fixes the number of events (events are taken in file order, as spikingjelly does).
    """
    n = len(t)
    if not (len(x) == len(y) == len(p) == n):
        raise ValueError(f"t, x, y, p lengths differ: {len(t)}, {len(x)}, {len(y)}, {len(p)}")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    x = np.asarray(x, np.int64)
    y = np.asarray(y, np.int64)
    if n and (x.min() < 0 or x.max() >= W or y.min() < 0 or y.max() >= H):
        raise ValueError(f"event coordinates outside {H}x{W}")
    di = n // frames
    segment = np.minimum(np.arange(n) // di, frames - 1) if di else np.full(n, frames - 1)
    index = ((segment * 2 + (np.asarray(p) != 0)) * H + y) * W + x
    counts = np.bincount(index, minlength=frames * 2 * H * W)
    return np.minimum(counts, 255).astype(np.uint8).reshape(frames, 2, H, W)


def _frames_of(events: Events, frames: int, path: Path) -> np.ndarray:
    if len(events.x) and (events.x.max() >= SENSOR_SIZE or events.y.max() >= SENSOR_SIZE):
        top = f"x up to {events.x.max()}, y up to {events.y.max()}"
        raise _corrupt(path, f"events outside the {SENSOR_SIZE}x{SENSOR_SIZE} sensor ({top})")
    return integrate_frames_by_number(*events, frames, SENSOR_SIZE, SENSOR_SIZE)


# ---------------------------------------------------------------------------------------------
# Cache


def _check_frames(frames) -> int:
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
        raise InputError("frames", f"must be a positive integer (frames per sample), got {frames!r}")
    return int(frames)


def _cache_file(cache_dir: Path, frames: int, name: str) -> Path:
    return cache_dir / f"frames_number_{frames}_split_by_number" / f"{name}.npz"


def _prepare_cache_dir(path: Path) -> None:
    """Create the cache folder and prove it is writable, before any decoding."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.parent / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        problem = f"cannot write the frame cache in {path.parent} ({e.strerror or e})"
        raise InputError("cache_dir", f"{problem}; give a writable cache_dir (it defaults to data_dir)") from None


def _save_cache(path: Path, train: Split, test: Split) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")  # renamed only once complete
    try:
        arrays = dict(zip(_CACHE_KEYS, (train.inputs, train.labels, test.inputs, test.labels)))
        with open(tmp, "wb") as f:
            # an .npz by hand: deflate level 1 is ~10x faster than np.savez_compressed's default level
            with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
                for key, tensor in arrays.items():
                    with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, tensor.numpy(), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        problem = f"cannot write the frame cache {path} ({e.strerror or e})"
        raise InputError("cache_dir", f"{problem}; give a writable cache_dir") from None


def _load_cache(path: Path, frames: int, info: DatasetInfo) -> Dataset:
    def bad(problem: str) -> InputError:
        return InputError("cache_dir", f"{path} is not a valid frame cache ({problem}); delete it to rebuild")

    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _CACHE_KEYS if k not in npz.files]
            if missing:
                raise bad(f"missing arrays {missing}")
            arrays = {k: npz[k] for k in _CACHE_KEYS}
    except InputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise bad(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    splits = []
    for split in ("train", "test"):
        x, y = arrays[f"{split}_inputs"], arrays[f"{split}_labels"]
        shape = (frames, 2, info.image_size, info.image_size)
        if x.dtype != np.uint8 or x.ndim != 5 or x.shape[1:] != shape:
            raise bad(f"{split}_inputs is {x.dtype} {x.shape}, expected uint8 [N, {', '.join(map(str, shape))}]")
        if y.dtype != np.int64 or y.shape != (x.shape[0],) or (y.size and (y.min() < 0 or y.max() >= info.num_classes)):
            raise bad(f"{split}_labels must be int64 [{x.shape[0]}] in 0..{info.num_classes - 1}")
        x, y = (torch.from_numpy(np.require(a, requirements="W")) for a in (x, y))
        splits.append(Split(x, y))
    return Dataset(info, *splits)


def _cached_or_built(info: DatasetInfo, data_dir, frames, cache_dir, plan, build) -> Dataset:
    """Load the cache if present; otherwise plan (validate inputs), check the cache folder, build, save."""
    frames = _check_frames(frames)
    data_dir = Path(data_dir)
    path = _cache_file(Path(cache_dir) if cache_dir is not None else data_dir, frames, info.name)
    if path.is_file():
        return _load_cache(path, frames, info)
    if not data_dir.is_dir():
        raise InputError("data_dir", f"{data_dir} is not a directory; expected the extracted {info.name} files")
    jobs = plan(data_dir)  # all checks on the raw layout happen here, before any decoding
    _prepare_cache_dir(path)
    train, test = (build(jobs[split], frames) for split in ("train", "test"))
    _save_cache(path, train, test)
    return Dataset(info, train, test)


# ---------------------------------------------------------------------------------------------
# DVS128 Gesture


def _gesture_root(data_dir: Path) -> Path:
    for root in (data_dir, data_dir / GESTURE_SUBDIR):
        if (root / GESTURE_TRIALS["train"]).is_file() or (root / GESTURE_TRIALS["test"]).is_file():
            for name in GESTURE_TRIALS.values():
                if not (root / name).is_file():
                    problem = f"{root} has no {name}"
                    raise InputError("data_dir", f"{problem}; expected both trials_to_*.txt from DvsGesture.tar.gz")
            return root
    raise InputError(
        "data_dir",
        f"no trials_to_train.txt in {data_dir} or {data_dir / GESTURE_SUBDIR}; expected DvsGesture.tar.gz "
        "extracted there (user*_*.aedat, user*_*_labels.csv, trials_to_train.txt, trials_to_test.txt)",
    )


def _read_gesture_labels(path: Path) -> list[tuple[int, int, int]]:
    """Rows (label 0..10, start_usec, end_usec) of a userXX_lighting_labels.csv."""
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        expected = "expected a CSV 'class,startTime_usec,endTime_usec'"
        raise InputError("data_dir", f"cannot read {path} ({e}); {expected}") from None
    if not lines or not lines[0].lower().startswith("class"):
        raise _corrupt(path, "no 'class,startTime_usec,endTime_usec' header line")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split(",")
        try:
            cls, start, end = (int(v) for v in parts)
        except ValueError:
            expected = "expected 'class,startTime_usec,endTime_usec' integers"
            raise _corrupt(path, f"line {number} is {line.strip()!r}; {expected}") from None
        if not 1 <= cls <= GESTURE_INFO.num_classes:
            raise _corrupt(path, f"line {number} has class {cls}; expected 1..{GESTURE_INFO.num_classes}")
        rows.append((cls - 1, start, end))
    return rows


def _plan_gesture(data_dir: Path) -> dict:
    """Per split: [(aedat path, label rows)], with every listed file checked to exist and parse."""
    root = _gesture_root(data_dir)
    jobs = {}
    for split, trials in GESTURE_TRIALS.items():
        lines = (root / trials).read_text(encoding="ascii", errors="replace").splitlines()
        names = [n.strip() for n in lines if n.strip()]
        if not names:
            raise InputError("data_dir", f"{root / trials} lists no .aedat files; expected one file name per line")
        jobs[split] = []
        for name in names:
            aedat = root / name
            csv = root / f"{Path(name).stem}_labels.csv"
            for needed in (aedat, csv):
                if not needed.is_file():
                    problem = f"{needed} is missing (listed in {trials})"
                    raise InputError("data_dir", f"{problem}; expected the complete DvsGesture.tar.gz")
            jobs[split].append((aedat, _read_gesture_labels(csv)))
    return jobs


def _build_gesture(jobs: list, frames: int) -> Split:
    n = sum(len(rows) for _, rows in jobs)
    inputs = np.zeros((n, frames, 2, SENSOR_SIZE, SENSOR_SIZE), np.uint8)
    labels = np.zeros(n, np.int64)
    i = 0
    for aedat, rows in jobs:
        events = read_aedat31(aedat)
        for label, start, end in rows:
            keep = (events.t >= start) & (events.t < end)  # same window as spikingjelly
            inputs[i] = _frames_of(Events(*(a[keep] for a in events)), frames, aedat)
            labels[i] = label
            i += 1
    return Split(torch.from_numpy(inputs), torch.from_numpy(labels))


def load_dvs128_gesture(data_dir: str | Path, frames: int, cache_dir: str | Path | None = None) -> Dataset:
    """DVS128 Gesture (IBM) as [N, frames, 2, 128, 128] uint8 event counts, 11 classes.

    data_dir holds the extracted DvsGesture.tar.gz (files in data_dir or data_dir/DvsGesture).
    Each trial userXX_lighting.aedat is cut into samples by userXX_lighting_labels.csv
    (events with start <= t < end; classes 1..11 become labels 0..10); trials_to_train.txt and
    trials_to_test.txt give the official split (1176 / 288 samples on the full dataset).
    """
    return _cached_or_built(GESTURE_INFO, data_dir, frames, cache_dir, _plan_gesture, _build_gesture)


# ---------------------------------------------------------------------------------------------
# CIFAR10-DVS


def _numeric_order(path: Path) -> tuple:
    """Sort key: the number at the end of the stem (cifar10_cat_10 after cifar10_cat_9), then the name."""
    match = re.search(r"(\d+)$", path.stem)
    return (0, int(match.group(1)), path.name) if match else (1, 0, path.name)


def _plan_cifar10_dvs(data_dir: Path) -> dict:
    """Per split: [(aedat path, label)]; the first CIFAR10_DVS_TEST_PER_CLASS files of each class are test."""
    missing = [c for c in CIFAR10_DVS_CLASSES if not (data_dir / c).is_dir()]
    if missing:
        raise InputError(
            "data_dir",
            f"{data_dir} lacks class folders {', '.join(missing)}; expected the ten CIFAR10-DVS archives "
            "(airplane.zip ... truck.zip) unzipped into data_dir/<class>/*.aedat",
        )
    jobs = {"train": [], "test": []}
    for label, cls in enumerate(CIFAR10_DVS_CLASSES):
        files = sorted((f for f in (data_dir / cls).glob("*.aedat") if f.is_file()), key=_numeric_order)
        if not files:
            raise InputError("data_dir", f"{data_dir / cls} has no .aedat files; expected {cls}.zip unzipped there")
        jobs["test"] += [(f, label) for f in files[:CIFAR10_DVS_TEST_PER_CLASS]]
        jobs["train"] += [(f, label) for f in files[CIFAR10_DVS_TEST_PER_CLASS:]]
    return jobs


def _build_cifar10_dvs(jobs: list, frames: int) -> Split:
    inputs = np.zeros((len(jobs), frames, 2, SENSOR_SIZE, SENSOR_SIZE), np.uint8)
    for i, (path, _) in enumerate(jobs):
        inputs[i] = _frames_of(read_cifar10_dvs_aedat(path), frames, path)
    labels = np.array([label for _, label in jobs], np.int64)
    return Split(torch.from_numpy(inputs), torch.from_numpy(labels))


def load_cifar10_dvs(data_dir: str | Path, frames: int, cache_dir: str | Path | None = None) -> Dataset:
    """CIFAR10-DVS as [N, frames, 2, 128, 128] uint8 event counts, 10 classes (airplane ... truck).

    data_dir holds the ten class archives unzipped into data_dir/<class>/*.aedat.
    There is no official split; this uses the common convention (spikingjelly's CIFAR10DVSTEBNSplit):
    within each class, files sorted by the number in their name, the first 100 are test and the
    rest train (9000 / 1000 samples on the full dataset).
    """
    return _cached_or_built(CIFAR10_DVS_INFO, data_dir, frames, cache_dir, _plan_cifar10_dvs, _build_cifar10_dvs)
