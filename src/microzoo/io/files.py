"""Image files by name: a file's stem, the images of a folder, files of several folders paired by stem.

Every part of microzoo that pairs files (evaluate, compare, training data, checks) uses these,
so a name means the same everywhere: the stem is the file name without its image suffix,
the longest known one (``a.ome.tif`` -> ``a``, ``a.ome.zarr`` -> ``a``, ``cell.v1.tif`` ->
``cell.v1``), and ``a.tif`` pairs with ``a.png`` in another folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from microzoo.errors import DataError, ImageError
from microzoo.io.read import IMAGE_SUFFIXES, find_images

__all__ = ["image_stem", "list_images", "pair_by_stem", "shared_data_dir"]

#: other suffixes a stem drops (point lists for detection)
_OTHER_SUFFIXES = (".csv",)


def image_stem(path: str | os.PathLike[str]) -> str:
    """The file name without its image suffix, the longest known one.

    >>> image_stem("x/a.ome.tif"), image_stem("a.ome.zarr"), image_stem("cell.v1.tif"), image_stem("b.PNG")
    ('a', 'a', 'cell.v1', 'b')
    """
    name = Path(path).name
    for suffix in (*IMAGE_SUFFIXES, *_OTHER_SUFFIXES):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def list_images(
    folder: str | os.PathLike[str], *, role: str = "images", extra_suffixes: tuple[str, ...] = ()
) -> list[Path]:
    """The image files in ``folder`` (not recursive), sorted by name; a DataError names ``role``.

    ``extra_suffixes`` (e.g. ``(".csv",)``) adds other files of those endings.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"the {role} folder {folder} does not exist or is not a folder; give a folder of images")
    try:
        found = find_images([str(folder)])
    except ImageError:
        found = []
    if extra_suffixes:
        found += [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.name.lower().endswith(tuple(extra_suffixes))]  # fmt: skip
    if not found:
        endings = ", ".join((*IMAGE_SUFFIXES, *extra_suffixes))
        raise DataError(f"no images ({endings}) in the {role} folder {folder}")
    return sorted(found)


def _by_stem(paths: Sequence[Path], role: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in paths:
        stem = image_stem(path)
        if stem in found:
            raise DataError(
                f"{found[stem].name} and {path.name} ({role}) share the name {stem!r}; files are paired by "
                "name without extension, so keep one of them"
            )
        found[stem] = path
    return found


def _listed(names: set[str]) -> str:
    shown = sorted(names)
    return ", ".join(shown[:8]) + (f" and {len(shown) - 8} more" if len(shown) > 8 else "")


def pair_by_stem(
    groups: Mapping[str, Sequence[Path]], *, extra_ok: bool = False
) -> tuple[list[str], dict[str, list[Path]]]:
    """Pair the files of several groups (role -> paths) by :func:`image_stem`.

    The first group is the reference: every one of its names must be in every other group.
    Names in another group that the reference lacks are an error too, unless ``extra_ok``
    (then they are left out). Two files of one group with the same stem are an error.
    Returns the reference's stems in its order, and for each role its paths in that order.

    Raises
    ------
    DataError
        Listing, per group, the names that do not pair.
    """
    if not groups:
        return [], {}
    keyed = {role: _by_stem(list(paths), role) for role, paths in groups.items()}
    reference_role, reference = next(iter(keyed.items()))
    problems = []
    for role, files in list(keyed.items())[1:]:
        missing, extra = set(reference) - set(files), set(files) - set(reference)
        if missing:
            problems.append(
                f"{len(missing)} name(s) of the {reference_role} have no file of the same name in the {role}: "
                f"{_listed(missing)}"
            )
        if extra and not extra_ok:
            problems.append(f"{len(extra)} name(s) in the {role} are not among the {reference_role}: {_listed(extra)}")
    if problems:
        raise DataError(
            "files are paired by name without extension (a.ome.tif pairs with a.png), and some do "
            "not pair: " + "; ".join(problems) + ". Rename or remove them."
        )
    stems = list(reference)
    return stems, {role: [files[stem] for stem in stems] for role, files in keyed.items()}


def shared_data_dir() -> Path:
    """The project's real data: ``$MICROZOO_SHARED_DATA``, or ``shared/data`` beside the repository
    (a source checkout: the tour, the notebooks and the docs' commands use it)."""
    env = os.environ.get("MICROZOO_SHARED_DATA")
    here = Path(__file__).resolve().parents[4] / "shared" / "data"
    path = Path(env) if env else here
    if not path.is_dir():
        raise DataError(
            f"the real data folder {path} is missing: put the shared folder beside the "
            "repository or set MICROZOO_SHARED_DATA"
        )
    return path
