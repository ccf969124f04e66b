"""`i2v generate --stack DIR` refuses in one line, before any job or stack, when DIR's stack does not answer
or other options name another stack."""

from pathlib import Path

import pytest

from services.stack.state_file import write_stack_file
from tests.cli.test_operate import HARBOR, i2v, one_error


def test_a_stack_file_left_by_a_killed_stack_is_named(tmp_path: Path) -> None:
    state = tmp_path / "state"
    write_stack_file(state, {"I2V_NATS_URL": "nats://127.0.0.1:9", "I2V_S3_ENDPOINT": "http://127.0.0.1:9"})

    code, lines, _ = i2v("generate", str(HARBOR), "--stack", str(state), cwd=tmp_path)

    one_error(code, lines, f"--stack {state}: the stack", "is not running (nothing answers at nats://127.0.0.1:9)")
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--nats", "nats://127.0.0.1:9", "--s3", "http://127.0.0.1:9"], "--nats and --s3 name servers"),
        (["--state-dir", "elsewhere"], "--state-dir is for the stack generate starts"),
    ],
)
def test_stack_with_another_way_to_name_one_is_refused(options: list[str], expected: str, tmp_path: Path) -> None:
    code, lines, _ = i2v("generate", str(HARBOR), "--stack", str(tmp_path), *options, cwd=tmp_path)

    one_error(code, lines, expected, exit_code=2)
    assert list(tmp_path.iterdir()) == []
