"""How `POST /v1/jobs` reads `Prefer` (RFC 7240): the first `wait`, held to 60 seconds; a malformed one ignored."""

import pytest

from services.gateway.routers.jobs import MAX_WAIT_S, wait_preference


@pytest.mark.parametrize(
    ("fields", "seconds"),
    [
        ([], None),
        (["respond-async"], None),
        (["wait=5"], 5),
        (["WAIT = 7"], 7),
        (['wait="9"'], 9),
        (["respond-async, wait=3"], 3),
        (["handling=lenient; x=1, wait=2; extra"], 2),
        (["wait=0"], 0),
        (["wait=61"], MAX_WAIT_S),
        (["wait=99999999999999999999"], MAX_WAIT_S),
        (["wait=4", "wait=8"], 4),  # only the first instance of a preference counts
        (["wait=4, wait=8"], 4),
        (["wait=soon"], None),
        (["wait=-1"], None),
        (["wait=1.5"], None),
        (["wait="], None),
        (["wait"], None),
        (["wait=٣"], None),  # a digit, but not an ASCII one
        (["waiting=5"], None),
    ],
)
def test_wait_preference(fields: list[str], seconds: int | None) -> None:
    assert wait_preference(fields) == seconds
