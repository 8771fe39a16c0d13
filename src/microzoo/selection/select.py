"""``microzoo select``: find candidate models, run them and the classical baseline, rank them.

With ground truth the candidates are run and scored by :func:`microzoo.qc.compare.compare`
itself (its report is written into ``OUT/qc``), so every figure of the selection equals
``microzoo compare``'s on the same images. Without it, the same
:func:`microzoo.qc.compare.run_methods` runs them and the ranking rests on agreement and trust.
The selection's own report is ``OUT/selection.html`` and ``OUT/selection.json``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from microzoo.errors import ConfigError, DataError
from microzoo.progress import ProgressCallback, no_progress
from microzoo.selection.candidates import Candidate, image_channels, named_candidates, zoo_candidates
from microzoo.selection.rank import Ranking, rank_with_truth, rank_without_truth

if TYPE_CHECKING:
    import numpy as np

    from microzoo.qc.compare import Comparison, MethodRuns
    from microzoo.qc.evaluate import Evaluation
    from microzoo.runtime.predict import Model, Prediction


@dataclass(frozen=True)
class Selection:
    """A selection's result: the ranking, what ran, and the files written."""

    ranking: Ranking
    candidates: tuple[Candidate, ...]
    baselines: tuple[str, ...]
    left_out: tuple[str, ...]  # zoo models not run, with the reason
    notices: tuple[str, ...]
    paths: dict[str, Path]
    #: method label in the ranking -> the source it was opened from (``Model.open`` takes it)
    sources: dict[str, str] = field(default_factory=dict)


def select_models(
    *,
    images_dir: Path,
    task: str,
    out_dir: Path,
    models: Sequence[str] = (),
    zoo: str | None = None,
    truth_dir: Path | None = None,
    search: str = "",
    max_candidates: int = 5,
    axes: str | None = None,
    weights: str | None = None,
    truth_foreground: int | None = None,
    data_range: float | None = None,
    finetune: bool = False,
    finetune_steps: int = 200,
    progress: ProgressCallback | None = None,
) -> Selection:
    """Rank ``models`` (or a zoo's models for ``task``) and the classical baseline on ``images_dir``.

    Parameters
    ----------
    images_dir : the user's images.
    task : "instances", "semantic" or "restoration" (the QC task, as ``compare`` takes it).
    out_dir : where ``selection.html``, ``selection.json`` and (with truth) ``qc/`` go.
    models : model packages (folder, zip, yaml, URL, ``zoo:NAME``) to rank.
    zoo : a zoo's address; its models for the task join the candidates (``search``: words they must match).
    truth_dir : ground truth paired with the images by name; without it the ranking is weaker.
    finetune : fine-tune the best trainable candidate on the images and truths for ``finetune_steps``
        steps, and rank it too.
    """
    progress = progress or no_progress
    if finetune and truth_dir is None:
        raise DataError("--finetune trains on annotated images: give --truth DIR")
    candidates = named_candidates(models)
    left_out: tuple[str, ...] = ()
    if zoo:
        first = _first_image(images_dir)
        found = zoo_candidates(
            zoo, task, image_channels=image_channels(first, axes=axes), text=search, limit=max_candidates,
            progress=progress,
        )  # fmt: skip
        candidates += [c for c in found.candidates if c.source not in {k.source for k in candidates}]
        left_out = found.left_out
    if not candidates:
        raise DataError("no candidate models: name model packages, or give --zoo URL to search a zoo for the task")
    out_dir = Path(out_dir)
    common: dict[str, Any] = dict(
        images_dir=images_dir, task=task, classical=True, axes=axes, weights=weights,
        truth_foreground=truth_foreground, data_range=data_range, progress=progress,
    )  # fmt: skip
    if truth_dir is not None:
        ranking, runs, paths, notices = _select_with_truth(
            candidates, truth_dir, out_dir, common, finetune=finetune, finetune_steps=finetune_steps
        )
    else:
        ranking, runs = _select_without_truth(candidates, common)
        paths, notices = {}, []
    selection = Selection(
        ranking=ranking,
        candidates=tuple(candidates),
        baselines=tuple(runs.classical_params),
        left_out=left_out,
        notices=(*notices, *runs.notices),
        paths=paths,
        sources=dict(runs.sources),
    )
    from microzoo.selection.report import write_selection

    written = write_selection(selection, runs, out_dir)
    return Selection(**{**vars(selection), "paths": {**written, **paths}})


def _select_with_truth(
    candidates: list[Candidate], truth_dir: Path, out_dir: Path, common: dict[str, Any], *, finetune: bool,
    finetune_steps: int,
) -> tuple[Ranking, MethodRuns, dict[str, Path], list[str]]:  # fmt: skip
    """Run and score the candidates with ``compare`` (fine-tune one first when asked); rank them."""
    from microzoo.qc.compare import compare

    notices = []
    if finetune:
        from microzoo.selection.finetune import split_annotated

        split = split_annotated(common["images_dir"], truth_dir, out_dir / "finetune")
        (common["images_dir"], truth_dir), tune = split.rank, split.tune
        notices.append(
            f"--finetune: {len(split.tune_names)} annotated images fine-tune, the other {len(split.rank_names)} "
            "rank every method (no method is scored on an image it was fine-tuned on)"
        )
    sources = [c.source for c in candidates]
    comparison = compare(sources, truth_dir=truth_dir, out_dir=out_dir / "qc", **common)
    if finetune:
        package = _finetuned(
            comparison, candidates, task=common["task"], tune=tune, out_dir=out_dir / "finetune",
            steps=finetune_steps, truth_foreground=common["truth_foreground"], progress=common["progress"],
        )  # fmt: skip
        candidates.append(package)
        comparison = compare([*sources, package.source], truth_dir=truth_dir, out_dir=out_dir / "qc", **common)
    runs = comparison.runs
    assert runs is not None  # compare keeps what it ran
    kinds = _kinds(runs, candidates)
    ranking = _with_verdict(rank_with_truth(comparison.evaluation, kinds), comparison.evaluation)
    return ranking, runs, {f"qc {name}": path for name, path in comparison.paths.items()}, notices


def _select_without_truth(candidates: list[Candidate], common: dict[str, Any]) -> tuple[Ranking, MethodRuns]:
    """Run the candidates, collecting each model's trust verdicts; rank by agreement and trust."""
    from microzoo.qc.compare import run_methods

    trust = _TrustNotes()
    runs = run_methods([c.source for c in candidates], truth_dir=None, on_prediction=trust, **common)
    ranking = rank_without_truth(runs, _kinds(runs, candidates), trust.verdicts, trust_evidence=trust.evidence)
    return ranking, runs


def _finetuned(
    comparison: Comparison, candidates: list[Candidate], *, task: str, tune: tuple[Path, Path], out_dir: Path,
    steps: int, truth_foreground: int | None, progress: ProgressCallback,
) -> Candidate:  # fmt: skip
    """Fine-tune the best-ranked trainable model of ``comparison`` on the ``tune`` images; its candidate."""
    from microzoo.selection.finetune import finetune, trainable

    runs = comparison.runs
    assert runs is not None
    ranking = rank_with_truth(comparison.evaluation, _kinds(runs, candidates))
    models = [runs.sources[e.method] for e in ranking.entries if e.kind == "model"]
    parent, refused = trainable(models)
    if parent is None:
        raise ConfigError(
            "--finetune: no candidate can be trained from (" + "; ".join(refused) + "); name a package microzoo "
            "exported, or leave out --finetune"
        )
    label = next(label for label, source in runs.sources.items() if source == parent)
    name = "finetuned-" + re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()
    run_dir = out_dir / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    package = finetune(parent, task=task, images=tune[0], truth=tune[1], out_dir=run_dir, steps=steps, name=name,
                       truth_foreground=truth_foreground, progress=progress)  # fmt: skip
    return Candidate(str(package), "fine-tuned", f"{label} fine-tuned for {steps} steps")


def _first_image(images_dir: Path) -> Path:
    from microzoo.io.files import list_images

    return list_images(images_dir, role="images")[0]


def _kinds(runs: MethodRuns, candidates: Sequence[Candidate]) -> dict[str, str]:
    origin = {c.source: c.origin for c in candidates}
    kinds = {
        label: ("fine-tuned" if origin.get(src) == "fine-tuned" else "model") for label, src in runs.sources.items()
    }
    kinds.update({name: "baseline" for name in runs.classical_params})
    return kinds


def _with_verdict(ranking: Ranking, evaluation: Evaluation) -> Ranking:
    """The ranking with the one-line verdict of its best model against the best classical baseline."""
    from dataclasses import replace

    from microzoo.qc.verdict import baseline_verdict, best_baseline

    models = [e.method for e in ranking.entries if e.kind != "baseline"]
    baselines = [e.method for e in ranking.entries if e.kind == "baseline"]
    if not models or not baselines:
        return ranking
    verdict = baseline_verdict(evaluation, models[0], best_baseline(evaluation, baselines))
    return replace(ranking, verdict=verdict.line)


class _TrustNotes:
    """Collects each model's trust verdict per image while ``run_methods`` predicts (input
    features, output statistics and the cheap flip check of :func:`microzoo.trust.note.trust_note`)."""

    def __init__(self) -> None:
        self.verdicts: dict[str, list[str]] = {}
        self.evidence: dict[str, str] = {}

    def __call__(self, label: str, model: Model, name: str, image: np.ndarray, axes: str, result: Prediction) -> None:
        from microzoo.trust.note import trust_note

        note = trust_note(model.package, [image], [name], [axes], outputs=[result.outputs], model=model)
        self.verdicts.setdefault(label, []).append(note.images[0].verdict)
        self.evidence[label] = note.evidence
