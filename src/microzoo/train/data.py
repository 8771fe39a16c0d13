"""Training data: read folders, normalise, split, cut augmented patches.

1. :func:`load_samples` reads every image of a folder (TIFF, PNG, Zarr) and, when asked, its
   partner of the same name in a second folder (label images, or clean images for CARE).
   RGB(A) pictures keep 3 colour channels when the data are colour (``data.colour``: ``auto``
   when the channels of some image differ; alpha dropped, grey images repeated to 3 channels)
   and become grey otherwise. Each image is normalised per channel by its own percentiles (1
   and 99.8 by default), the normalisation the exported package repeats before prediction.
2. :func:`split_samples` puts a seeded share of the images aside for validation (a single
   image is cut in two along x instead).
3. :class:`PatchSampler` cuts random patches of a fixed size, redraws patches without
   foreground for segmentation, and augments them: flips, 90-degree rotations in the yx
   plane, and a random gain and offset of the input's intensities.

Every random choice comes from a ``numpy.random.Generator`` the caller seeds, so the same
seed gives the same split and the same patches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.errors import AxesError, DataError, ImageError
from microzoo.io.axes import rgb_to_grey
from microzoo.io.files import image_stem, list_images, pair_by_stem
from microzoo.io.read import find_images, read_image
from microzoo.train.config import AugmentationConfig, DataConfig

__all__ = ["PatchSampler", "Sample", "is_colour", "load_samples", "normalize_percentiles", "split_samples"]


@dataclass(frozen=True)
class Sample:
    """One training image.

    Attributes
    ----------
    name : the file name without its suffix (the key that pairs images with labels).
    raw : the image in its own units, float32, ``(c, *spatial)``.
    image : ``raw`` normalised by its percentiles, float32, ``(c, *spatial)``.
    truth : label image (integers, ``spatial``) or clean image (float32 raw, ``(c, *spatial)``), or None.
    colour : whether ``raw`` holds the red, green and blue channels of a colour set.
    """

    name: str
    raw: np.ndarray
    image: np.ndarray
    truth: np.ndarray | None = None
    colour: bool = False

    @property
    def grey(self) -> np.ndarray:
        """``raw`` as one grey image ``spatial``: a colour sample made grey as the runtime does for a
        grey model, else the first channel (what classical baselines and reports take)."""
        if self.colour:
            return rgb_to_grey(self.raw, channel_axis=0).astype(np.float32)
        return self.raw[0]

    def require_truth(self) -> np.ndarray:
        """``truth``, for the tasks that train on it (their configs require labels or clean images)."""
        if self.truth is None:
            raise DataError(f"{self.name} has no label or clean image; give data.labels or data.targets")
        return self.truth


def normalize_percentiles(image: np.ndarray, *, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Map each channel's ``low`` and ``high`` percentiles to 0 and 1 (``(c, *spatial)``, float32).

    The same formula as the zoo's ``scale_range`` preprocessing: ``(x - p_low) / (p_high - p_low + 1e-6)``.
    """
    image = np.asarray(image, dtype=np.float32)
    axes = tuple(range(1, image.ndim))
    p_low = np.percentile(image, low, axis=axes, keepdims=True)
    p_high = np.percentile(image, high, axis=axes, keepdims=True)
    return ((image - p_low) / (p_high - p_low + 1e-6)).astype(np.float32)


def _channels_first(data: Any, axes: str, *, spatial_dims: int, path: Path) -> tuple[np.ndarray, bool]:
    """``(c, *spatial)`` float32 from an image (an array, or a lazy one: read whole) with axes,
    and whether it is an RGB(A) picture (``yxc`` with 3 or 4 channels: alpha dropped here)."""
    wanted = "yx" if spatial_dims == 2 else "zyx"
    extra = set(axes) - set(wanted) - {"c"}
    if extra or not set(wanted) <= set(axes):
        hint = " or set data.spatial_dims: 3" if "z" in axes and spatial_dims == 2 else ""
        raise DataError(
            f"{path.name} has axes {axes!r}, but {spatial_dims}-D training needs {wanted!r} "
            f"(with an optional channel axis c); give data.axes{hint}"
        )
    order = ("c" if "c" in axes else "") + wanted
    array = np.transpose(np.asarray(data), [axes.index(a) for a in order]).astype(np.float32)
    if "c" not in axes:
        return array[None], False
    if axes.endswith("c") and array.shape[0] in (3, 4):  # RGB(A) picture
        return array[:3], True
    return array, False


def _read(path: Path, *, axes: str | None, spatial_dims: int) -> tuple[np.ndarray, bool]:
    try:
        image = read_image(path, axes=axes)
    except AxesError:
        if axes is not None or spatial_dims != 3:
            raise
        image = read_image(path, axes="zyx")  # a plain 3-D stack: the usual meaning
    return _channels_first(image.data, image.axes, spatial_dims=spatial_dims, path=path)


#: channels that differ by more than this share of the image's range make a picture colour
COLOUR_TOLERANCE = 0.02


def is_colour(rgb: np.ndarray) -> bool:
    """Whether the 3 channels of an RGB picture ``(3, *spatial)`` differ (a grey picture repeats one)."""
    span = float(np.ptp(rgb)) or 1.0
    return float(np.abs(rgb - rgb.mean(axis=0)).mean()) > COLOUR_TOLERANCE * span


def _as_colour(raw: np.ndarray, picture: bool, keep: bool) -> np.ndarray:
    """An RGB picture as 3 channels (``keep``) or grey as the runtime makes it; a grey image repeated
    to 3 channels when the set is colour."""
    if picture:
        return raw if keep else rgb_to_grey(raw, channel_axis=0)[None].astype(np.float32)
    return np.repeat(raw, 3, axis=0) if keep and raw.shape[0] == 1 else raw


def _partners(images: list[Path], folder: Path, role: str) -> list[Path]:
    """The file in ``folder`` with the same name as each image; a DataError names the missing."""
    if not folder.is_dir():
        raise DataError(f"the {role} folder {folder} does not exist; check data.{role}")
    try:
        partners = list_images(folder, role=role)
    except DataError:  # no images there: every image lacks its partner, which the pairing names
        partners = []
    _, paired = pair_by_stem({"images": images, role: partners}, extra_ok=True)
    return paired[role]


def load_samples(
    config: DataConfig, *, truth: str | None = None, progress: Callable[[int, int, str], None] | None = None
) -> list[Sample]:
    """Read, convert and normalise every image of ``config.images`` (sorted by name).

    ``truth="labels"`` pairs each image with its label image of ``config.labels``;
    ``truth="targets"`` with its clean image of ``config.targets``.
    """
    try:
        paths = find_images([str(config.images)])
    except ImageError as error:
        raise DataError(f"data.images: {error}") from None
    partners = _partners(paths, Path(getattr(config, truth)), truth) if truth else [None] * len(paths)
    low, high = config.normalization_percentiles
    read = []
    for done, path in enumerate(paths, start=1):
        read.append(_read(path, axes=config.axes, spatial_dims=config.spatial_dims))
        if progress:
            progress(done, 2 * len(paths), "reading training images")
    keep = config.colour == "rgb" or (
        config.colour == "auto" and any(picture and is_colour(raw) for raw, picture in read)
    )
    if keep and not any(picture for _, picture in read):
        raise DataError("data.colour is 'rgb' but no image is an RGB(A) picture; use 'auto' or 'grey'")
    samples, channels = [], set()
    for done, (path, partner, (raw, picture)) in enumerate(zip(paths, partners, read, strict=True), start=1):
        raw = _as_colour(raw, picture, keep)
        channels.add(raw.shape[0])
        other = None
        if partner is not None:
            # clean images follow their inputs' colour; label images stay one channel
            other = _as_colour(*_read(partner, axes=config.axes, spatial_dims=config.spatial_dims),
                               keep and truth != "labels")  # fmt: skip
            if other.shape[1:] != raw.shape[1:]:
                raise DataError(
                    f"{path.name} has spatial shape {raw.shape[1:]} but its {truth} file {partner.name} "
                    f"has {other.shape[1:]}; give images and {truth} of the same size"
                )
            if truth == "labels":
                if other.shape[0] != 1 or not np.all(other == np.round(other)):
                    raise DataError(
                        f"{partner.name} is not a label image (one channel of whole numbers, 0 = background)"
                    )
                other = other[0].astype(np.int32)
        samples.append(Sample(image_stem(path), raw, normalize_percentiles(raw, low=low, high=high), other, keep))
        if progress:
            progress(len(paths) + done, 2 * len(paths), "reading training images")
    if len(channels) > 1:
        raise DataError(f"the images have different channel counts {sorted(channels)}; give images alike")
    return samples


def split_samples(samples: Sequence[Sample], *, fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """A seeded split into training and validation images (at least one of each).

    A single image is cut along x: the last ``fraction`` of its width validates.
    """
    samples = list(samples)
    if not samples:
        raise DataError("no training images: give a folder with at least one image")
    if len(samples) == 1:
        only = samples[0]
        width = only.raw.shape[-1]
        cut = int(round(width * (1.0 - fraction)))
        if cut < 8 or width - cut < 8:
            raise DataError(f"{only.name} is too narrow to split ({width} pixels); give at least two images")

        def part(array: np.ndarray | None, sl: slice) -> np.ndarray | None:
            return None if array is None else array[..., sl]

        head = slice(0, cut)
        first = replace(only, raw=only.raw[..., head], image=only.image[..., head], truth=part(only.truth, head))
        rest = slice(cut, None)
        second = replace(only, raw=only.raw[..., rest], image=only.image[..., rest], truth=part(only.truth, rest))
        return [first], [second]
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = min(max(1, int(round(fraction * len(samples)))), len(samples) - 1)
    validation = sorted(order[:n_val].tolist())
    training = sorted(order[n_val:].tolist())
    return [samples[i] for i in training], [samples[i] for i in validation]


def _pad_to(array: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Mirror-pad the trailing spatial axes of ``array`` up to at least ``size``."""
    spatial = array.shape[-len(size) :]
    if all(s >= p for s, p in zip(spatial, size, strict=True)):
        return array
    pads = [(0, 0)] * (array.ndim - len(size)) + [(0, max(p - s, 0)) for s, p in zip(spatial, size, strict=True)]
    return np.pad(array, pads, mode="symmetric")


class PatchSampler:
    """Random, augmented patches from images and their targets.

    Parameters
    ----------
    images : normalised inputs, each ``(c, *spatial)``.
    targets : what the network should output for each image, ``(k, *spatial)``, or None
        (self-supervised: the caller makes targets from the input patches).
    patch_size : ``(y, x)`` or ``(z, y, x)``.
    augmentation : flips, rotations, intensity jitter; None for none.
    foreground : boolean masks (``spatial``) of each image's objects; patches with less than
        ``min_foreground`` of them are redrawn (up to 20 times).
    jitter_targets : apply the intensity jitter to the targets too (restoration pairs).
    """

    def __init__(
        self, images: Sequence[np.ndarray], targets: Sequence[np.ndarray] | None, *,
        patch_size: Sequence[int], augmentation: AugmentationConfig | None = None,
        foreground: Sequence[np.ndarray] | None = None, min_foreground: float = 0.0,
        jitter_targets: bool = False,
    ) -> None:  # fmt: skip
        if not images:
            raise DataError("no images to cut patches from")
        self.patch_size = tuple(int(p) for p in patch_size)
        self.images = [_pad_to(a, self.patch_size) for a in images]
        self.targets = None if targets is None else [_pad_to(t, self.patch_size) for t in targets]
        self.foreground = None if foreground is None else [_pad_to(f, self.patch_size) for f in foreground]
        self.min_foreground = min_foreground
        self.augmentation = augmentation or AugmentationConfig(flips=False, rotations=False, intensity_jitter=0.0)
        self.jitter_targets = jitter_targets
        sizes = np.array([np.prod(a.shape[1:], dtype=float) for a in self.images])
        self.weights = sizes / sizes.sum()  # every pixel equally likely

    def _corner(self, rng: np.random.Generator, index: int) -> tuple[slice, ...]:
        spatial = self.images[index].shape[1:]
        starts = [int(rng.integers(0, s - p + 1)) for s, p in zip(spatial, self.patch_size, strict=True)]
        return tuple(slice(a, a + p) for a, p in zip(starts, self.patch_size, strict=True))

    def _one(self, rng: np.random.Generator) -> list[np.ndarray]:
        """One augmented patch: ``[input]``, or ``[input, target]`` when the sampler has targets."""
        index = int(rng.choice(len(self.images), p=self.weights))
        region = self._corner(rng, index)
        if self.foreground is not None and self.min_foreground > 0:
            for _ in range(20):
                if self.foreground[index][region].mean() >= self.min_foreground:
                    break
                index = int(rng.choice(len(self.images), p=self.weights))
                region = self._corner(rng, index)
        arrays = [self.images[index][(slice(None), *region)]]
        if self.targets is not None:
            arrays.append(self.targets[index][(slice(None), *region)])
        return self._augment(rng, arrays)

    def _augment(self, rng: np.random.Generator, arrays: list[np.ndarray]) -> list[np.ndarray]:
        aug = self.augmentation
        if aug.flips:
            for axis in (-1, -2):
                if rng.random() < 0.5:
                    arrays = [np.flip(a, axis=axis) for a in arrays]
        if aug.rotations:
            square = self.patch_size[-1] == self.patch_size[-2]
            turns = int(rng.integers(0, 4)) if square else 2 * int(rng.integers(0, 2))
            arrays = [np.rot90(a, k=turns, axes=(-2, -1)) for a in arrays]
        arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]
        if aug.intensity_jitter > 0:
            gain = 1.0 + aug.intensity_jitter * rng.uniform(-1, 1)
            offset = aug.intensity_jitter * rng.uniform(-1, 1)
            arrays[0] = arrays[0] * gain + offset
            if self.jitter_targets and len(arrays) == 2:
                arrays[1] = arrays[1] * gain + offset
        return arrays

    def _stacks(self, rng: np.random.Generator, batch_size: int) -> list[np.ndarray]:
        patches = [self._one(rng) for _ in range(batch_size)]
        return [np.stack(column) for column in zip(*patches, strict=True)]

    def sample(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """A batch ``(inputs (b, c, *patch), targets (b, k, *patch))``; needs a sampler with targets."""
        if self.targets is None:
            raise TypeError("this PatchSampler has no targets; draw input patches with sample_inputs")
        inputs, targets = self._stacks(rng, batch_size)
        return inputs, targets

    def sample_inputs(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        """A batch of input patches ``(b, c, *patch)`` (self-supervised training: no targets)."""
        return self._stacks(rng, batch_size)[0]
