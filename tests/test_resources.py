"""One memory budget and one thread count for prediction, tiling, the engines and training."""

from __future__ import annotations

import os

import pytest

from microzoo.errors import ConfigError
from microzoo.runtime import resources


def test_the_same_default_budget_for_prediction_and_tiling(monkeypatch: pytest.MonkeyPatch) -> None:
    """plan_tiles and Model.predict used different defaults (2 GiB and a quarter of free memory)."""
    from microzoo.runtime.geometry import geometry_from_descr
    from microzoo.runtime.tiling import plan_tiles

    monkeypatch.delenv(resources.MEMORY_BUDGET_ENV, raising=False)
    monkeypatch.setattr(resources, "available_memory", lambda: 4 * 2**30)  # a 4 GiB machine: 1 GiB budget
    assert resources.memory_budget() == 2**30
    monkeypatch.setenv(resources.MEMORY_BUDGET_ENV, "300MiB")
    assert resources.memory_budget() == 300 * 2**20
    assert resources.memory_budget(5000) == 5000
    from bioimageio.spec.model import v0_5 as v05  # a model of free size: the budget picks the tile

    descr = v05.ModelDescr.model_construct(
        inputs=[
            v05.InputTensorDescr.model_construct(
                id=v05.TensorId("raw"),
                axes=[
                    v05.BatchAxis(),
                    v05.ChannelAxis(channel_names=[v05.Identifier("c")]),
                    v05.SpaceInputAxis(id=v05.AxisId("y"), size=v05.ParameterizedSize(min=16, step=16)),
                    v05.SpaceInputAxis(id=v05.AxisId("x"), size=v05.ParameterizedSize(min=16, step=16)),
                ],
            )
        ],
        outputs=[
            v05.OutputTensorDescr.model_construct(
                id=v05.TensorId("out"),
                axes=[
                    v05.BatchAxis(),
                    v05.ChannelAxis(channel_names=[v05.Identifier("c")]),
                    *(
                        v05.SpaceOutputAxis(
                            id=v05.AxisId(a),
                            size=v05.SizeReference(tensor_id=v05.TensorId("raw"), axis_id=v05.AxisId(a)),
                        )
                        for a in "yx"
                    ),
                ],
            )
        ],
    )
    plan = plan_tiles(geometry_from_descr(descr), {"raw": {"batch": 1, "channel": 1, "y": 8192, "x": 8192}})
    assert 100 * 2**20 < plan.bytes_per_forward <= 300 * 2**20 and plan.n_tiles > 1  # not 2 GiB


@pytest.mark.parametrize("text", ["0", "0GB", "-1", "nan", "inf", "lots"])
def test_sizes_that_are_not_positive_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match=text):
        resources.parse_bytes(text)


@pytest.mark.parametrize("value", [0, -5, 1.5, True])
def test_budgets_and_threads_that_are_not_positive_whole_numbers_are_refused(value: object) -> None:
    with pytest.raises(ConfigError, match="memory budget"):
        resources.memory_budget(value)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="thread count"):
        resources.thread_count(value)  # type: ignore[arg-type]


def test_thread_count_follows_the_cores_this_process_may_use() -> None:
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert resources.thread_count() == expected
    assert resources.thread_count(2) == 2


def test_engines_and_training_use_the_one_thread_count() -> None:
    import inspect

    from microzoo.runtime import engines
    from microzoo.train import loop

    for module in (engines, loop):
        source = inspect.getsource(module)
        assert "cpu_count" not in source and "sched_getaffinity" not in source
        assert "thread_count(" in source


@pytest.mark.parametrize(
    ("cores", "threads", "device", "split"),
    [(2, None, None, (1, 2)), (16, None, None, (8, 2)), (1, None, None, (1, 1)), (16, 4, None, (4, 2)),
     (2, 2, None, (2, 1)), (16, None, "cuda", (16, 1))],
)  # fmt: skip
def test_forward_split_shares_the_cores_between_at_most_two_forwards(
    cores: int, threads: int | None, device: str | None, split: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resources.os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert resources.forward_split(threads, device=device) == split
