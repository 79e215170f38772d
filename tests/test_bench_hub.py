"""``kiroku bench``'s hub figure runs its whole path — the real PostgreSQL, Mosquitto and ``kiroku
hub``, devices enrolled through the hub's API, publishing status and signed log batches over
TLS, everything looked for in the database afterwards — and reports. What it measures is the
machine's: no value is asserted."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.hub, pytest.mark.xdist_group("city")]  # one city at a time (test_city.py)


def test_the_quick_hub_figure_runs_and_reports(tmp_path):
    from kiroku.bench.hub import bench_hub, missing

    why = missing()
    if why:
        pytest.skip(why)
    figures = bench_hub(tmp_path, [5], warmup=1, window=4)
    served = figures[0]
    assert served.value is not None, served.note  # the run went through; whether the level passed is the machine's
    assert "5 devices:" in served.note
    assert [f.unit for f in figures] == ["devices", "s", "CPU s/s", "MB", "CPU s/s"]
    assert all(f.value is not None for f in figures)
