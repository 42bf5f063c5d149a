"""The links table on its own: pairs found more than once or in either order are stored once from each
end, and a lookup keeps only pairs among the candidates at or above the asked threshold."""
from __future__ import annotations

import numpy as np

from curator.link_table import LinkTable, write_links


def test_pairs_are_stored_once_from_each_end_and_filtered_on_lookup(tmp_path):
    gdir = tmp_path / "gen-00000"
    gdir.mkdir()
    i = np.array([0, 3, 2, 0, 5])
    j = np.array([3, 0, 7, 9, 6])
    cos = np.array([0.97, 0.97, 0.951, 0.99, 0.9501], dtype=np.float32)
    info = write_links(gdir, tmp_path, 10, i, j, cos, 0.95, 1.0)
    assert info.links == 8 and info.indptr_file == "gen-00000/links-indptr.npy"
    table = LinkTable(tmp_path, info)
    adj = table.among(np.array([0, 2, 3, 7, 9]), 0.95)
    assert [sorted(r.tolist()) for r in adj] == [[2, 4], [3], [0], [1], [0]]  # positions in the candidates
    strict = table.among(np.array([0, 2, 3, 7, 9]), 0.98)
    assert [r.tolist() for r in strict] == [[4], [], [], [], [0]]
    assert table.among(np.array([0, 3]), 0.9) is None  # below the table's threshold: it would miss pairs
    assert len(table.among(np.array([], dtype=np.int64), 0.95)) == 0
    assert [r.tolist() for r in table.among(np.array([5, 6]), 0.9501)] == [[1], [0]]  # float32: not rounded away
