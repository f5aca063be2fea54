"""CIFAR-10/100 readers for the original "python version" directories.

The pickles come from outside, so they are read with a restricted unpickler that can build only
numpy arrays (plus the dicts, lists, strings and numbers pickle makes without looking up globals).
Files are checked by shape and label range, not md5, so shortened copies with the same format load.
"""

import codecs
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from slt.data.base import Dataset, DatasetInfo, Split
from slt.errors import InputError

try:  # numpy >= 2 keeps the implementation in numpy._core; numpy.core is a deprecated alias
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"
CIFAR100_DIR = "cifar-100-python"
CIFAR100_TRAIN = "train"
CIFAR100_TEST = "test"

_ROW = 3 * 32 * 32
_CIFAR100_KINDS = {"fine": ("fine_labels", 100), "coarse": ("coarse_labels", 20)}

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def _latin1_encode(text, encoding="latin1"):
    """Stand-in for _codecs.encode: rebuilds bytes pickled by Python 3 at protocol 2, nothing else."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode only allowed with latin1, got {encoding!r}")
    return codecs.encode(text, "latin1")


# Hand-written allow-list: exactly the globals a CIFAR pickle of numpy arrays refers to.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 writes bytes at protocol 2 as _codecs.encode(str, "latin1"); allowed for latin1 only.
    ("_codecs", "encode"): _latin1_encode,
}
_ALLOWED_TEXT = ", ".join(f"{m}.{n}" for m, n in _ALLOWED)


class _Refused(pickle.UnpicklingError):
    """A global outside the allow-list; carries its dotted name."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the allow-listed globals; anything else is refused unrun."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def _load_pickle(path: Path):
    """Read one CIFAR pickle safely; every failure is an InputError naming the file."""
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding="latin1").load()
    except _Refused as e:
        raise InputError(
            "data_dir",
            f"{path}: refused to load global '{e.name}' from the pickle; only {_ALLOWED_TEXT} are allowed",
        ) from None
    except InputError:
        raise
    except Exception as e:  # corrupt or truncated file: any unpickling error
        why = f"{type(e).__name__}: {e}".replace("\n", " ")
        raise InputError("data_dir", f"{path}: not a readable CIFAR pickle ({why})") from None


def _get(d: dict, key: str):
    """Look a key up as str (Python 2 pickles read as latin1) or as bytes (Python 3 pickles)."""
    if key in d:
        return d[key]
    return d.get(key.encode("latin1"))


def _read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Data uint8 [N, 3072] and labels int64 [N] from one batch file, checked against the format."""
    obj = _load_pickle(path)
    if not isinstance(obj, dict):
        raise InputError(
            "data_dir", f"{path}: expected a pickled dict with 'data' and '{label_key}', got {type(obj).__name__}"
        )
    data, labels = _get(obj, "data"), _get(obj, label_key)
    is_array = isinstance(data, np.ndarray)
    if not is_array or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _ROW:
        got = f"{data.dtype} array of shape {list(data.shape)}" if is_array else type(data).__name__
        raise InputError("data_dir", f"{path}: 'data' must be a uint8 array of shape [N, {_ROW}], got {got}")
    n = data.shape[0]
    if not isinstance(labels, (list, tuple, np.ndarray)):
        raise InputError(
            "data_dir", f"{path}: '{label_key}' must be a list of {n} ints, got {type(labels).__name__}"
        )
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != n or (n > 0 and not np.issubdtype(lab.dtype, np.integer)):
        got = f"{lab.dtype} of shape {list(lab.shape)}"
        raise InputError(
            "data_dir", f"{path}: '{label_key}' must be a list of {n} ints (one per row of 'data'), got {got}"
        )
    lab = lab.astype(np.int64)
    if n > 0 and (lab.min() < 0 or lab.max() >= num_classes):
        raise InputError(
            "data_dir", f"{path}: '{label_key}' must lie in 0..{num_classes - 1}, found {lab.min()}..{lab.max()}"
        )
    return data, lab


def _resolve_dir(data_dir, folder: str, files: tuple[str, ...]) -> Path:
    """The folder holding `files`: data_dir itself or data_dir/folder; InputError if files are missing."""
    if not isinstance(data_dir, (str, os.PathLike)) or str(data_dir) == "":
        raise InputError(
            "data_dir", f"must be a path to a '{folder}' directory or its parent, got {data_dir!r}"
        )
    root = Path(data_dir).expanduser()
    expected = f"expected a '{folder}' directory ({', '.join(files)}) or its parent"
    if not root.is_dir():
        raise InputError("data_dir", f"{root} is not a directory; {expected}")
    base = root / folder if (root / folder).is_dir() else root
    missing = [f for f in files if not (base / f).is_file()]
    if missing:
        raise InputError("data_dir", f"{base} lacks {', '.join(missing)}; {expected}")
    return base


def _to_split(parts: list[tuple[np.ndarray, np.ndarray]]) -> Split:
    """Stack batches into one Split: uint8 [N, 3, 32, 32] (rows are 1024 R, 1024 G, 1024 B), int64 [N]."""
    data = np.concatenate([d for d, _ in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([lab for _, lab in parts])
    inputs = torch.from_numpy(np.ascontiguousarray(data.reshape(-1, 3, 32, 32)))
    return Split(inputs, torch.from_numpy(labels))


def load_cifar10(data_dir) -> Dataset:
    """CIFAR-10 from `cifar-10-batches-py/` (data_batch_1..5, test_batch) or its parent directory."""
    base = _resolve_dir(data_dir, CIFAR10_DIR, CIFAR10_TRAIN + (CIFAR10_TEST,))
    train = _to_split([_read_batch(base / f, "labels", 10) for f in CIFAR10_TRAIN])
    test = _to_split([_read_batch(base / CIFAR10_TEST, "labels", 10)])
    info = DatasetInfo("cifar10", 10, 3, 32, False, CIFAR10_MEAN, CIFAR10_STD, True)
    return Dataset(info, train, test)


def load_cifar100(data_dir, label_kind: str = "fine") -> Dataset:
    """CIFAR-100 from `cifar-100-python/` (train, test) or its parent; "fine" = 100 classes, "coarse" = 20."""
    if label_kind not in _CIFAR100_KINDS:
        raise InputError(
            "label_kind", f"must be 'fine' (100 classes) or 'coarse' (20 classes), got {label_kind!r}"
        )
    key, num_classes = _CIFAR100_KINDS[label_kind]
    base = _resolve_dir(data_dir, CIFAR100_DIR, (CIFAR100_TRAIN, CIFAR100_TEST))
    train = _to_split([_read_batch(base / CIFAR100_TRAIN, key, num_classes)])
    test = _to_split([_read_batch(base / CIFAR100_TEST, key, num_classes)])
    info = DatasetInfo("cifar100", num_classes, 3, 32, False, CIFAR100_MEAN, CIFAR100_STD, True)
    return Dataset(info, train, test)
