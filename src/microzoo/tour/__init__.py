"""The tour: six steps through deep learning for microscopy on real data, written as one page.

Example::

    from microzoo.tour import run_tour

    result = run_tour("tour-output", quick=True)
    print(result.page)

Each step (:mod:`microzoo.tour.zoo_steps`, :mod:`~microzoo.tour.nuclei`,
:mod:`~microzoo.tour.denoise`, :mod:`~microzoo.tour.curve`, :mod:`~microzoo.tour.large`) calls
the library's own verbs and returns a :class:`StepResult`; :func:`run_tour` runs them in order
and writes ``tour.html`` (:mod:`microzoo.tour.page`). The tour sits above ``selection`` and
below the front ends (``microzoo tour`` and ``make demo`` run it).
"""

from __future__ import annotations

from microzoo.tour.common import Picture, StepResult, Table
from microzoo.tour.run import STEPS, TourResult, run_tour

__all__ = ["STEPS", "Picture", "StepResult", "Table", "TourResult", "run_tour"]
