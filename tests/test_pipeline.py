import torch

from slt.data.base import DatasetInfo, Split
from slt.data.pipeline import BatchPipeline, iterate_batches, random_crop, random_flip

INFO = DatasetInfo("toy", 10, 1, 6, False, (0.5,), (0.25,), True)


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    gen = torch.Generator().manual_seed(3)
    out = random_crop(x, 2, gen)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets = torch.randint(0, 5, (2, 2), generator=torch.Generator().manual_seed(3))
    for b in range(2):
        oy, ox = offsets[0, b].item(), offsets[1, b].item()
        torch.testing.assert_close(out[b], padded[b, :, oy:oy + 6, ox:ox + 6])


def test_random_crop_works_on_event_frames():
    x = torch.rand(3, 4, 2, 8, 8)
    out = random_crop(x, 1, torch.Generator().manual_seed(0))
    assert out.shape == x.shape


def test_random_flip_flips_about_half():
    x = torch.arange(1000 * 4, dtype=torch.float32).view(1000, 1, 1, 4)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == x[:, 0, 0, 3])
    assert torch.equal(out[flipped], x[flipped].flip(-1))
    assert torch.equal(out[~flipped], x[~flipped])
    assert 400 < flipped.sum() < 600


def test_pipeline_normalises_without_augmentation():
    pipe = BatchPipeline(INFO, "cpu")
    x = torch.full((2, 1, 6, 6), 255, dtype=torch.uint8)
    torch.testing.assert_close(pipe(x, augment=False), torch.full((2, 1, 6, 6), 2.0))


def test_event_pipeline_is_time_first_and_resizes():
    info = DatasetInfo("ev", 10, 2, 8, True, (0.0, 0.0), (1.0, 1.0), False)
    x = torch.randint(0, 5, (3, 4, 2, 8, 8), dtype=torch.uint8)
    out = BatchPipeline(info, "cpu", image_size=4)(x, augment=False)
    assert out.shape == (4, 3, 2, 4, 4)
    torch.testing.assert_close(out[1, 2, 0, 0, 0], x[2, 1, 0, :2, :2].float().mean())


def test_batches_cover_the_split_once():
    split = Split(torch.arange(10).view(10, 1), torch.arange(10))
    seen = torch.cat([y for _, y in iterate_batches(split, 3, shuffle=True, generator=torch.Generator())])
    assert sorted(seen.tolist()) == list(range(10))


def test_static_images_are_resized_by_area_after_the_crop_and_before_normalising():
    x = torch.randint(0, 256, (3, 1, 6, 6), dtype=torch.uint8)
    out = BatchPipeline(INFO, "cpu", image_size=3)(x, augment=False)
    assert out.shape == (3, 1, 3, 3)
    expected = (x[1, 0, 2:4, 4:6].float().mean() / 255 - 0.5) / 0.25  # the 2x2 block at row 1, column 2
    torch.testing.assert_close(out[1, 0, 1, 2], expected)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    cropped = BatchPipeline(INFO, "cpu")(x, augment=True, generator=gen())
    resized = BatchPipeline(INFO, "cpu", image_size=3)(x, augment=True, generator=gen())
    torch.testing.assert_close(resized, torch.nn.functional.avg_pool2d(cropped, 2))  # the same crop and flip
    assert torch.equal(BatchPipeline(INFO, "cpu", image_size=6)(x, augment=False),
                       BatchPipeline(INFO, "cpu")(x, augment=False))  # its own size: untouched
