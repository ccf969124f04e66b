"""`i2v stack up --replicas SERVICE=N[,SERVICE=N]`: refused in one line before anything starts when a service is
unknown (or the gateway, whose count is --gateways), N is under 1 or not a number."""

from pathlib import Path

import pytest

from services.cli.main import build_parser, main


def test_replicas_reach_stack_up_as_a_mapping() -> None:
    args = build_parser().parse_args(["stack", "up", "--replicas", "latent=2,decode=2", "--gateways", "2"])
    assert (args.replicas, args.gateways) == ({"latent": 2, "decode": 2}, 2)
    assert build_parser().parse_args(["stack", "up"]).replicas == {}


@pytest.mark.parametrize(
    ("replicas", "error"),
    [
        ("painter=2", "no service 'painter' to replicate"),
        ("gateway=2", "the gateway's processes are counted by --gateways"),
        ("latent=0", "latent needs at least 1 process, got 0"),
        ("latent=two", "'latent=two': N must be a whole number"),
        ("latent", "'latent': give SERVICE=N, e.g. latent=2"),
    ],
)
def test_stack_up_refuses_bad_replicas_in_one_line(
    replicas: str, error: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["stack", "up", "--replicas", replicas])
    assert exited.value.code == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and message.startswith("i2v stack up: error: argument --replicas: ")
    assert error in message
    assert not (tmp_path / ".i2v").exists()
