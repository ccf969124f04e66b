"""Ten 40-megapixel uploads at once keep a real gateway process under 600 MB (bench/upload_memory.py)."""

import pytest

from bench.upload_memory import GOAL_MIB, measure

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_ten_large_uploads_at_once_stay_under_the_memory_goal() -> None:
    result = measure(uploads=10, kind="png", rss_cap_mib=3 * GOAL_MIB)
    print(result.report())
    assert result.statuses == [202] * 10, result.report()
    assert not result.capped and result.peak_mib < GOAL_MIB, result.report()
