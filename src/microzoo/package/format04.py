"""Repair the few fields of format 0.4 descriptions that bioimageio.spec reads as valid 0.4 but
cannot convert to 0.5.

bioimageio.core runs such packages from their 0.4 description; microzoo runs 0.5 descriptions
only, so the fields the converter refuses are rewritten, in a copy of the YAML content, to what
they mean for running the model, and each change is said in a notice. Nothing else is touched,
and a description that converts as it is is never repaired.

Known cases (bioimageio.spec 0.5.x):

- an output of fixed ``shape`` with a ``halo`` ("output axis with halo and fixed size ... not
  allowed"). Where an input has the same axes and a fixed shape, the output is sized by that
  input instead (``reference_tensor``, scale = output size / input size, offset 0): the same
  sizes, and the halo is kept, so tiles still overlap by it. Otherwise the halo is dropped.
- a citation ``url`` that is not an http(s) URL (``bioimage.io``, ``ftp://...``): a URL without
  scheme gets ``https://``; another scheme is dropped (the entry too where it has no ``doi``).
"""

from __future__ import annotations

import copy
from typing import Any


def repair_for_conversion(content: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A copy of a 0.4 description's ``content`` that the 0.5 converter accepts, and the notices
    saying what was changed (empty where nothing needed a change)."""
    repaired = copy.deepcopy(content)
    notices = [*_repair_fixed_shape_halos(repaired), *_repair_citation_urls(repaired)]
    return repaired, tuple(notices)


def _repair_fixed_shape_halos(content: dict[str, Any]) -> list[str]:
    notices = []
    inputs = [t for t in content.get("inputs") or [] if isinstance(t, dict)]
    for output in content.get("outputs") or []:
        if not isinstance(output, dict):
            continue
        shape, halo, axes = output.get("shape"), output.get("halo"), output.get("axes")
        if not isinstance(shape, list) or not isinstance(halo, list) or not any(halo):
            continue
        name = output.get("name", "?")
        source = next(
            (
                t
                for t in inputs
                if t.get("axes") == axes
                and isinstance(t.get("shape"), list)
                and len(t["shape"]) == len(shape)
                and all(t["shape"])
            ),
            None,
        )
        if source is not None:
            output["shape"] = {
                "reference_tensor": source.get("name"),
                "scale": [out / size for out, size in zip(shape, source["shape"], strict=True)],
                "offset": [0] * len(shape),
            }
            notices.append(
                f"output '{name}': its fixed shape {shape} with a halo {halo} cannot be converted to format "
                f"0.5; it is read as sized by input '{source.get('name')}' (the same sizes), halo kept"
            )
        else:
            output["halo"] = [0] * len(halo)
            notices.append(
                f"output '{name}': its fixed shape {shape} with a halo {halo} cannot be converted to format "
                "0.5 and no input has the same axes; the halo is dropped, so tiles do not overlap (give "
                "an image of the model's input size to avoid tiling)"
            )
    return notices


def _repair_citation_urls(content: dict[str, Any]) -> list[str]:
    notices = []
    kept = []
    for entry in content.get("cite") or []:
        url = entry.get("url") if isinstance(entry, dict) else None
        if not isinstance(url, str) or url.startswith(("http://", "https://")):
            kept.append(entry)
            continue
        if "://" not in url:
            entry["url"] = f"https://{url}"
            notices.append(f"cite: the URL '{url}' has no scheme; read as '{entry['url']}'")
            kept.append(entry)
        elif entry.get("doi"):
            del entry["url"]
            notices.append(f"cite: the URL '{url}' is not http(s) and was left out (the entry keeps its doi)")
            kept.append(entry)
        else:
            notices.append(
                f"cite: the entry '{entry.get('text', '')}' was left out: its URL '{url}' is not "
                "http(s) and it has no doi"
            )
    if "cite" in content and isinstance(content["cite"], list) and kept:
        content["cite"] = kept
    return notices
