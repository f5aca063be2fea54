"""The embedded default dataset: scikit-learn's bundled 8x8 digits (1,797 real images), upsampled.

Needs no download, so the demo and the fast tests run on real images.
"""

import torch
import torch.nn.functional as F

from slt.data.base import Dataset, DatasetInfo, Split
from slt.data.subset import stratified_mask
from slt.errors import InputError

MAX_IMAGE_SIZE = 256  # 1,797 float images of 256x256 are ~470 MB while upsampling; larger is a typo


def _check_args(image_size, seed, test_fraction) -> None:
    """InputError for a bad argument, before any work."""
    if type(image_size) is not int or not 8 <= image_size <= MAX_IMAGE_SIZE:
        raise InputError("image_size", f"must be an integer from 8 to {MAX_IMAGE_SIZE}, got {image_size!r}")
    if type(seed) is not int:
        raise InputError("seed", f"must be an integer, got {seed!r}")
    if type(test_fraction) not in (int, float) or not 0 < test_fraction < 1:
        raise InputError("test_fraction", f"must be a number strictly between 0 and 1, got {test_fraction!r}")


def load_digits(image_size: int = 32, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """Digits as 1-channel uint8 [N, 1, S, S] images with a seeded, stratified train/test split.

    Rows keep their original order inside each split; the same seed gives the same split.
    """
    _check_args(image_size, seed, test_fraction)
    from sklearn.datasets import load_digits as _sk_load_digits  # lazy: sklearn import is slow

    raw = _sk_load_digits()
    images = torch.as_tensor(raw.images, dtype=torch.float32).unsqueeze(1)  # [N, 1, 8, 8], values 0..16
    labels = torch.as_tensor(raw.target, dtype=torch.int64)
    images = images * (255.0 / 16.0)
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    inputs = images.round().clamp_(0, 255).to(torch.uint8)

    test_mask = stratified_mask(labels, 10, seed, float(test_fraction))
    train = Split(inputs[~test_mask], labels[~test_mask])
    test = Split(inputs[test_mask], labels[test_mask])

    scaled = train.inputs.to(torch.float64) / 255.0
    mean = round(scaled.mean().item(), 4)
    std = round(scaled.std().item(), 4)
    info = DatasetInfo("digits", 10, 1, image_size, False, (mean,), (std,), False)
    return Dataset(info, train, test)
