"""DVS readers on tiny files written in the real formats (AEDAT 3.1 for DVS128 Gesture, jAER AEDAT 2.0
for CIFAR10-DVS), frame integration against hand-computed arrays, splits, the cache and input errors."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from slt.data import dvs
from slt.errors import InputError

AEDAT31_HEADER = (
    b"#!AER-DAT3.1\r\n"
    b"#Format: RAW\r\n"
    b"#Source 1: DVS128\r\n"
    b"#Start-Time: 2017-01-01 00:00:00 (TZ+0000)\r\n"
    b"#!END-HEADER\r\n"
)
AEDAT2_HEADER = b"#!AER-DAT2.0\r\n# This is a raw AE data file created by saveAERDataToFile.m\r\n"


# --- writers for the real formats ------------------------------------------------------------


def aedat31_packet(etype, payload_events, overflow=0, size=8):
    """One AEDAT 3.1 packet: 28-byte little-endian header + capacity*size bytes."""
    n = len(payload_events) // size
    header = struct.pack("<hhiiiiii", etype, 1, size, 4, overflow, n, n, n)
    return header + payload_events


def polarity_packet(x, y, p, ts, overflow=0):
    """Polarity events: data = x<<17 | y<<2 | p<<1 | valid, then the low 31 timestamp bits."""
    x, y, p, ts = (np.asarray(a, np.uint32) for a in (x, y, p, ts))
    data = (x << 17) | (y << 2) | (p << 1) | 1
    body = np.stack([data, ts], axis=1).astype("<u4").tobytes()
    return aedat31_packet(1, body, overflow)


def write_aedat31(path, packets):
    path.write_bytes(AEDAT31_HEADER + b"".join(packets))


def write_aedat31_events(path, t, x, y, p):
    """Events in one polarity packet per 31-bit overflow epoch."""
    t = np.asarray(t, np.int64)
    packets = []
    for epoch in np.unique(t >> 31):
        m = (t >> 31) == epoch
        xm, ym, pm = (np.asarray(a)[m] for a in (x, y, p))
        packets.append(polarity_packet(xm, ym, pm, t[m] & 0x7FFFFFFF, int(epoch)))
    write_aedat31(path, packets)


def write_cifar10_dvs(path, t, x, y, p):
    """Inverse of spikingjelly's decoding: raw_x = 127 - y, raw_y = 127 - x, raw_p = 1 - p (big-endian)."""
    x, y, p = (np.asarray(a, np.uint32) for a in (x, y, p))
    addr = ((127 - x) << 8) | ((127 - y) << 1) | (1 - p)
    body = np.stack([addr, np.asarray(t, np.uint32)], axis=1).astype(">u4").tobytes()
    path.write_bytes(AEDAT2_HEADER + body)


def write_labels(path, rows):
    path.write_text("class,startTime_usec,endTime_usec\r\n" + "".join(f"{c},{s},{e}\r\n" for c, s, e in rows))


def one_line_error(excinfo, field):
    msg = str(excinfo.value)
    assert excinfo.value.field == field
    assert msg.startswith(f"{field}: ") and "\n" not in msg
    return msg


# --- AEDAT 3.1 -------------------------------------------------------------------------------


def test_read_aedat31_decodes_literal_event(tmp_path):
    data = (5 << 17) | (9 << 2) | (1 << 1) | 1  # x=5, y=9, on, valid
    body = struct.pack("<II", data, 1234)
    write_aedat31(tmp_path / "a.aedat", [aedat31_packet(1, body, overflow=2)])
    ev = dvs.read_aedat31(tmp_path / "a.aedat")
    assert ev.x.tolist() == [5] and ev.y.tolist() == [9] and ev.p.tolist() == [1]
    assert ev.t.tolist() == [1234 | (2 << 31)]


def test_read_aedat31_roundtrip_skips_other_packets(tmp_path):
    path = tmp_path / "user01_lab.aedat"
    special = aedat31_packet(0, b"\x00" * 16)  # 2 special events (type 0), must be skipped
    write_aedat31(path, [
        polarity_packet([0, 127, 64], [1, 2, 127], [1, 0, 1], [10, 20, 2**31 - 1]),
        special,
        polarity_packet([3, 4], [5, 6], [0, 1], [7, 8], overflow=1),
    ])  # fmt: skip
    ev = dvs.read_aedat31(path)
    assert ev.x.tolist() == [0, 127, 64, 3, 4]
    assert ev.y.tolist() == [1, 2, 127, 5, 6]
    assert ev.p.tolist() == [1, 0, 1, 0, 1]
    assert ev.t.tolist() == [10, 20, 2**31 - 1, 2**31 + 7, 2**31 + 8]


def test_read_aedat31_corrupt_files(tmp_path):
    good = AEDAT31_HEADER + polarity_packet([1, 2], [3, 4], [0, 1], [5, 6])
    cases = {
        "truncated.aedat": good[:-3],  # last event cut
        "short_header.aedat": good + b"\x01\x00\x00",  # partial packet header
        "no_end.aedat": b"#!AER-DAT3.1\r\n#Format: RAW\r\n" + good[len(AEDAT31_HEADER) :],
        "bad_size.aedat": AEDAT31_HEADER + aedat31_packet(1, b"\x00" * 12, size=12),
    }
    for name, raw in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(InputError) as e:
            dvs.read_aedat31(tmp_path / name)
        assert name in one_line_error(e, "data_dir")


# --- CIFAR10-DVS AEDAT 2.0 -------------------------------------------------------------------


def test_read_cifar10_dvs_literal_address(tmp_path):
    # address 0x0507: raw polarity 1, raw x = 3 (bits 1-7), raw y = 5 (bits 8-14)
    (tmp_path / "a.aedat").write_bytes(AEDAT2_HEADER + struct.pack(">II", 0x0507, 99))
    ev = dvs.read_cifar10_dvs_aedat(tmp_path / "a.aedat")
    assert (ev.x.tolist(), ev.y.tolist(), ev.p.tolist(), ev.t.tolist()) == ([122], [124], [0], [99])


def test_read_cifar10_dvs_roundtrip(tmp_path):
    t, x, y, p = [1, 2, 3, 4], [0, 127, 10, 64], [127, 0, 20, 64], [0, 1, 1, 0]
    write_cifar10_dvs(tmp_path / "cifar10_cat_0.aedat", t, x, y, p)
    ev = dvs.read_cifar10_dvs_aedat(tmp_path / "cifar10_cat_0.aedat")
    assert (ev.t.tolist(), ev.x.tolist(), ev.y.tolist(), ev.p.tolist()) == (t, x, y, p)


def test_read_cifar10_dvs_corrupt(tmp_path):
    write_cifar10_dvs(tmp_path / "ok.aedat", [1, 2], [3, 4], [5, 6], [0, 1])
    raw = (tmp_path / "ok.aedat").read_bytes()
    (tmp_path / "cut.aedat").write_bytes(raw[:-5])
    (tmp_path / "noheader.aedat").write_bytes(raw[len(AEDAT2_HEADER) :])
    for name in ("cut.aedat", "noheader.aedat"):
        with pytest.raises(InputError) as e:
            dvs.read_cifar10_dvs_aedat(tmp_path / name)
        assert name in one_line_error(e, "data_dir")


# --- frames ----------------------------------------------------------------------------------


def test_integrate_seven_events_into_three_frames():
    # N=7, T=3: di=2, segments [0,2), [2,4), [4,7) -- the remainder goes to the last frame
    x = [0, 1, 2, 0, 0, 1, 1]
    y = [0, 0, 1, 1, 0, 1, 1]
    p = [1, 0, 1, 1, 0, 0, 0]
    out = dvs.integrate_frames_by_number(np.arange(7), np.array(x), np.array(y), np.array(p), 3, 2, 3)
    expected = np.array([
        [[[0, 1, 0], [0, 0, 0]],   # frame 0, off
         [[1, 0, 0], [0, 0, 0]]],  # frame 0, on
        [[[0, 0, 0], [0, 0, 0]],
         [[0, 0, 0], [1, 0, 1]]],
        [[[1, 0, 0], [0, 2, 0]],
         [[0, 0, 0], [0, 0, 0]]],
    ], dtype=np.uint8)  # fmt: skip
    assert out.dtype == np.uint8 and out.shape == (3, 2, 2, 3)
    np.testing.assert_array_equal(out, expected)


def test_segment_bounds_match_spikingjelly_formula():
    j_l, j_r = dvs.segment_bounds(7, 3)
    assert j_l.tolist() == [0, 2, 4] and j_r.tolist() == [2, 4, 7]
    j_l, j_r = dvs.segment_bounds(2, 3)  # fewer events than frames: all in the last frame
    assert j_l.tolist() == [0, 0, 0] and j_r.tolist() == [0, 0, 2]


def test_integrate_few_events_empty_and_saturation():
    out = dvs.integrate_frames_by_number(np.arange(2), np.array([0, 1]), np.array([0, 0]), np.array([0, 1]), 3, 1, 2)
    assert out[:2].sum() == 0 and out[2].tolist() == [[[1, 0]], [[0, 1]]]
    empty = np.zeros(0, np.int64)
    assert dvs.integrate_frames_by_number(empty, empty, empty, empty, 4, 2, 2).sum() == 0
    n = 300
    out = dvs.integrate_frames_by_number(np.arange(n), np.zeros(n), np.zeros(n), np.ones(n), 1, 1, 1)
    assert out.tolist() == [[[[0]], [[255]]]]


# --- DVS128 Gesture --------------------------------------------------------------------------


def make_gesture(root: Path):
    """Two train trials, one test trial; returns the expected (label, event index list) per sample."""
    root.mkdir(parents=True)
    # user01_lab: events at t = 100..109, cut into [100, 104) and [104, 109)
    t1 = np.arange(100, 110)
    x1 = np.arange(10)
    write_aedat31_events(root / "user01_lab.aedat", t1, x1, x1 + 1, x1 % 2)
    write_labels(root / "user01_lab_labels.csv", [(1, 100, 104), (11, 104, 109)])  # t=109 excluded
    t2 = np.array([5, 6, 2**31 + 3, 2**31 + 4])  # crosses a timestamp overflow
    write_aedat31_events(root / "user02_led.aedat", t2, [1, 2, 3, 4], [0, 0, 0, 0], [1, 1, 1, 1])
    write_labels(root / "user02_led_labels.csv", [(3, 2**31, 2**31 + 10)])
    t3 = np.array([50, 60, 70])
    write_aedat31_events(root / "user03_natural.aedat", t3, [7, 7, 7], [8, 8, 8], [0, 1, 0])
    write_labels(root / "user03_natural_labels.csv", [(5, 0, 1000)])
    (root / "trials_to_train.txt").write_text("user01_lab.aedat\r\nuser02_led.aedat\r\n\r\n")
    (root / "trials_to_test.txt").write_text("user03_natural.aedat\n")


def test_gesture_windows_labels_and_split(tmp_path):
    make_gesture(tmp_path / "DvsGesture")  # as DvsGesture.tar.gz extracts
    ds = dvs.load_dvs128_gesture(tmp_path, frames=2)
    assert ds.info == dvs.GESTURE_INFO and ds.info.flip is False and ds.info.is_event
    assert ds.train.inputs.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    assert ds.train.inputs.shape == (3, 2, 2, 128, 128) and ds.test.inputs.shape == (1, 2, 2, 128, 128)
    assert ds.train.labels.tolist() == [0, 10, 2] and ds.test.labels.tolist() == [4]

    def frames_of(x, y, p):
        n = len(x)
        out = dvs.integrate_frames_by_number(np.arange(n), np.array(x), np.array(y), np.array(p), 2, 128, 128)
        return torch.from_numpy(out)

    x1 = np.arange(10)
    assert torch.equal(ds.train.inputs[0], frames_of(x1[0:4], x1[0:4] + 1, x1[0:4] % 2))  # t 100..103
    assert torch.equal(ds.train.inputs[1], frames_of(x1[4:9], x1[4:9] + 1, x1[4:9] % 2))  # t 104..108
    assert torch.equal(ds.train.inputs[2], frames_of([3, 4], [0, 0], [1, 1]))  # only the overflowed pair
    assert ds.test.inputs[0].sum() == 3
    assert ds.test.inputs[0, 1, 1, 8, 7] == 1 and ds.test.inputs[0, 0, 0, 8, 7] == 1  # 1 event / frame 0, 2 / frame 1
    assert ds.test.inputs[0, 1, 0, 8, 7] == 1


def test_gesture_cache_written_and_reused(tmp_path):
    data = tmp_path / "data"
    make_gesture(data)
    first = dvs.load_dvs128_gesture(data, frames=3)
    cache = data / "frames_number_3_split_by_number" / "dvs128-gesture.npz"
    assert cache.is_file()
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # no temp or probe left behind
    for f in data.glob("*.aedat"):
        f.rename(f.with_suffix(".moved"))  # raw files gone: only the cache can answer
    second = dvs.load_dvs128_gesture(data, frames=3)
    assert torch.equal(first.train.inputs, second.train.inputs) and torch.equal(first.test.labels, second.test.labels)
    assert second.train.inputs.dtype == torch.uint8 and second.train.inputs.is_contiguous()
    with pytest.raises(InputError):  # another T is not cached and the raw files are missing
        dvs.load_dvs128_gesture(data, frames=4)


def test_gesture_cache_dir_elsewhere_leaves_data_untouched(tmp_path):
    data = tmp_path / "data"
    make_gesture(data)
    before = sorted(p.name for p in data.iterdir())
    dvs.load_dvs128_gesture(data, frames=1, cache_dir=tmp_path / "cache")
    assert sorted(p.name for p in data.iterdir()) == before
    assert (tmp_path / "cache" / "frames_number_1_split_by_number" / "dvs128-gesture.npz").is_file()


def test_gesture_input_errors(tmp_path):
    with pytest.raises(InputError) as e:
        dvs.load_dvs128_gesture(tmp_path / "nope", frames=4)
    assert "nope" in one_line_error(e, "data_dir")

    data = tmp_path / "data"
    make_gesture(data)
    (data / "trials_to_test.txt").unlink()
    with pytest.raises(InputError) as e:
        dvs.load_dvs128_gesture(data, frames=4)
    assert "trials_to_test.txt" in one_line_error(e, "data_dir")

    (data / "trials_to_test.txt").write_text("user03_natural.aedat\n")
    (data / "user03_natural_labels.csv").unlink()
    with pytest.raises(InputError) as e:
        dvs.load_dvs128_gesture(data, frames=4)
    assert "user03_natural_labels.csv" in one_line_error(e, "data_dir")

    write_labels(data / "user03_natural_labels.csv", [(12, 0, 10)])  # class out of 1..11
    with pytest.raises(InputError) as e:
        dvs.load_dvs128_gesture(data, frames=4)
    assert "class 12" in one_line_error(e, "data_dir")

    write_labels(data / "user03_natural_labels.csv", [(5, 0, 1000)])
    raw = (data / "user03_natural.aedat").read_bytes()
    (data / "user03_natural.aedat").write_bytes(raw[:-4])  # truncated
    with pytest.raises(InputError) as e:
        dvs.load_dvs128_gesture(data, frames=4)
    assert "user03_natural.aedat" in one_line_error(e, "data_dir")
    assert not (data / "frames_number_4_split_by_number" / "dvs128-gesture.npz").exists()

    for bad in (0, -1, 2.0, True, "8"):
        with pytest.raises(InputError) as e:
            dvs.load_dvs128_gesture(data, frames=bad)
        one_line_error(e, "frames")


def test_unwritable_cache_dir_fails_before_decoding(tmp_path, monkeypatch):
    data = tmp_path / "data"
    make_gesture(data)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(dvs, "read_aedat31", lambda path: pytest.fail("decoded before checking cache_dir"))
    with pytest.raises(InputError) as e:
        dvs.load_dvs128_gesture(data, frames=2, cache_dir=blocker)
    assert "a_file" in one_line_error(e, "cache_dir")


def test_corrupt_cache_is_reported(tmp_path):
    data = tmp_path / "data"
    make_gesture(data)
    cache = data / "frames_number_2_split_by_number" / "dvs128-gesture.npz"
    cache.parent.mkdir()
    cache.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputError) as e:
        dvs.load_dvs128_gesture(data, frames=2)
    assert "delete it" in one_line_error(e, "cache_dir")

    np.savez(cache, train_inputs=np.zeros((1, 2, 2, 128, 128), np.uint8))  # incomplete array set
    with pytest.raises(InputError) as e:
        dvs.load_dvs128_gesture(data, frames=2)
    msg = one_line_error(e, "cache_dir")
    assert "missing arrays" in msg and msg.count("cache_dir") == 1


# --- CIFAR10-DVS -----------------------------------------------------------------------------


def make_cifar10_dvs(root: Path, numbers=(0, 1, 2, 10)):
    """Every class folder gets files cifar10_<class>_<n>.aedat with n+1 events at pixel (x=label, y=n)."""
    for label, cls in enumerate(dvs.CIFAR10_DVS_CLASSES):
        (root / cls).mkdir(parents=True)
        for n in numbers:
            k = n + 1
            write_cifar10_dvs(root / cls / f"cifar10_{cls}_{n}.aedat", np.arange(k), [label] * k, [n] * k, [1] * k)


def test_cifar10_dvs_split_and_order(tmp_path, monkeypatch):
    make_cifar10_dvs(tmp_path)
    monkeypatch.setattr(dvs, "CIFAR10_DVS_TEST_PER_CLASS", 2)  # real value is 100; tiny files here
    ds = dvs.load_cifar10_dvs(tmp_path, frames=1)
    assert ds.info == dvs.CIFAR10_DVS_INFO and ds.info.flip is True and ds.info.num_classes == 10
    assert ds.test.labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert ds.train.labels.tolist() == ds.test.labels.tolist()
    assert ds.train.inputs.shape == (20, 1, 2, 128, 128) and ds.train.inputs.dtype == torch.uint8

    def number_of(sample):  # the file number is encoded as y, the label as x, n+1 "on" events
        y, x = torch.nonzero(sample[0, 1], as_tuple=True)
        assert sample[0, 0].sum() == 0 and x.tolist() == [x[0].item()]
        return y.item(), int(sample.sum())

    assert [number_of(s) for s in ds.test.inputs[:2]] == [(0, 1), (1, 2)]
    assert [number_of(s) for s in ds.train.inputs[:2]] == [(2, 3), (10, 11)]  # numeric, not "10" < "2"
    assert (tmp_path / "frames_number_1_split_by_number" / "cifar10-dvs.npz").is_file()


def test_cifar10_dvs_default_first_100_are_test(tmp_path):
    make_cifar10_dvs(tmp_path, numbers=range(101))
    ds = dvs.load_cifar10_dvs(tmp_path, frames=1, cache_dir=tmp_path / "c")
    assert len(ds.test) == 1000 and len(ds.train) == 10
    assert [int(s.sum()) for s in ds.train.inputs] == [101] * 10  # file 100 of each class


def test_cifar10_dvs_input_errors(tmp_path):
    with pytest.raises(InputError) as e:
        dvs.load_cifar10_dvs(tmp_path / "missing", frames=2)
    one_line_error(e, "data_dir")

    make_cifar10_dvs(tmp_path)
    (tmp_path / "truck" / "cifar10_truck_0.aedat").rename(tmp_path / "truck.aedat")
    for f in (tmp_path / "truck").iterdir():
        f.unlink()
    (tmp_path / "truck").rmdir()
    with pytest.raises(InputError) as e:
        dvs.load_cifar10_dvs(tmp_path, frames=2)
    assert "truck" in one_line_error(e, "data_dir")

    (tmp_path / "truck").mkdir()
    with pytest.raises(InputError) as e:
        dvs.load_cifar10_dvs(tmp_path, frames=2)
    assert "no .aedat" in one_line_error(e, "data_dir")

    make_cifar10_dvs(tmp_path / "again")
    bad = tmp_path / "again" / "dog" / "cifar10_dog_1.aedat"
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(InputError) as e:
        dvs.load_cifar10_dvs(tmp_path / "again", frames=2)
    assert "cifar10_dog_1.aedat" in one_line_error(e, "data_dir")


@pytest.mark.parametrize("method", ["snn", "ann", "mpslt"])
def test_slt_train_runs_end_to_end_on_real_format_gesture_files(tmp_path, capsys, method):
    from app.cli import main

    make_gesture(tmp_path / "gesture")
    # a third training trial with two windows of gesture 1, so class 0 has a validation example to give
    root = tmp_path / "gesture"
    t4 = np.arange(200, 220)
    write_aedat31_events(root / "user04_lab.aedat", t4, t4 % 16, t4 % 8, t4 % 2)
    write_labels(root / "user04_lab_labels.csv", [(1, 200, 210), (1, 210, 220)])
    (root / "trials_to_train.txt").write_text("user01_lab.aedat\nuser02_led.aedat\nuser04_lab.aedat\n")
    out = tmp_path / "run"
    assert main(["train", "--model", "vgg9", "--method", method, "--dataset", "dvs128-gesture", "--data-dir",
                 str(tmp_path / "gesture"), "--T", "3", "--image-size", "32", "--width", "0.125", "--epochs", "1",
                 "--batch-size", "4", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["time_steps"] == (1 if method == "ann" else 3)
    assert metrics["params"] > 0 and metrics["energy"]["energy_mj"] > 0
    assert (metrics["train_size"], metrics["val_size"], metrics["test_size"]) == (4, 1, 1)  # class 0: 3 -> 2 + 1
