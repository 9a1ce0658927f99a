"""lib.common.report: QC contact sheets page their rows and stop at the cap."""

from pathlib import Path

import numpy as np

from lib.common import report
from lib.common.io import read_image


def test_contact_sheets_page_rows_and_stop_at_the_cap(tmp_path: Path) -> None:
    cell = np.zeros((16, 16, 3), np.uint8)
    sheets = report.contact_sheets(range(7), lambda row: [cell + 10 * row, cell], tmp_path, per_sheet=3, max_sheets=2)
    assert [p.name for p in sheets] == ["contact_000.png", "contact_001.png"]  # rows 6 and on: over the cap
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contact_000.png", "contact_001.png"]
    page = np.asarray(read_image(sheets[1]).pixels)  # rows 3, 4, 5: their first cells hold 30, 40, 50
    assert int(page[..., 0].max()) == 50 and int(page[:16, :16].max()) == 30
