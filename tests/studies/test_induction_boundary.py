"""The diversity boundary from a pool × seed sweep's error logs."""

from __future__ import annotations

import math

import pandas as pd

from lmlab.studies.induction_boundary import boundary_at, boundary_table, generalising, main


def _sweep() -> pd.DataFrame:
    rows = []
    for step, ok_from in ((2000, 2000), (4000, 740)):
        for pool in (100, 500, 740, 750, 2000, math.inf):
            for seed in (1, 2, 3):
                copies = pool >= ok_from and not (pool == 740 and seed == 3 and step == 4000)
                rows.append((pool, seed, step, 0.06 if copies else 0.98))
    return pd.DataFrame(rows, columns=["pool", "seed", "step", "err_ood"])


def test_boundary_brackets_the_first_pool_where_most_seeds_generalise() -> None:
    df = _sweep()
    assert boundary_at(df[df["step"] == 4000]) == (500.0, 740.0)
    assert boundary_at(df[df["step"] == 2000]) == (750.0, 2000.0)


def test_generalising_counts_seeds_below_the_threshold() -> None:
    g = generalising(_sweep().query("step == 4000"))
    row = g[g["pool"] == 740].iloc[0]
    assert (row["seeds"], row["generalise"]) == (3, 2)
    assert row["err_ood_mean"] == (0.06 + 0.06 + 0.98) / 3


def test_table_has_one_row_per_step() -> None:
    table = boundary_table(_sweep())
    assert table["step"].tolist() == [2000, 4000]
    assert table["generalises_from"].tolist() == [2000.0, 740.0]
    assert "740: 2/3" in table["seeds_generalising"].iloc[1]


def test_a_folder_that_is_not_a_run_exits_2(tmp_path, capsys) -> None:
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "summary.json" in err and "\n" not in err
