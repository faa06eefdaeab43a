"""``eval_id``: sortable by time, and never shared by two evaluations started in the same second."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from stemflow.evaluation.results import new_eval_id
from stemflow.store.paths import check_component


def test_two_evaluations_in_the_same_instant_get_different_ids() -> None:
    instant = datetime(2026, 11, 24, 10, 15, 0, 123456, tzinfo=timezone.utc)
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: new_eval_id(instant), range(2000)))
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"eval-20261124T101500123456Z-[0-9a-f]{8}", i) for i in ids)
    assert all(check_component(i) == i for i in ids)  # a safe folder name and run_id


def test_ids_sort_by_time_to_the_microsecond() -> None:
    early = new_eval_id(datetime(2026, 11, 24, 10, 15, 0, 999, tzinfo=timezone.utc))
    late = new_eval_id(datetime(2026, 11, 24, 10, 15, 0, 1000, tzinfo=timezone.utc))
    assert sorted([late, early]) == [early, late]
