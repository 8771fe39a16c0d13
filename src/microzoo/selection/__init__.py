"""Model selection: rank candidate models and the classical baseline on the user's own images.

The verbs, importable from here (loaded on first use)::

    select_models(images_dir=..., task=..., out_dir=..., models=... | zoo=...)   rank, write the report
    rank_with_truth / rank_without_truth                                        the ranking alone
"""

from __future__ import annotations

from microzoo._lazy import lazy_exports

#: public name -> the module that defines it
_EXPORTS = {
    "Candidate": "candidates", "named_candidates": "candidates", "zoo_candidates": "candidates",
    "Ranking": "rank", "rank_with_truth": "rank", "rank_without_truth": "rank",
    "Selection": "select", "select_models": "select",
}  # fmt: skip
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
