"""Helpers shared by the command-line tests: run ``activelab`` in-process and check a one-sentence error."""

from __future__ import annotations

from activelab.cli import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``activelab ARGV`` in this process: exit code, standard output, standard error."""
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_sentence(code: int, out: str, err: str, *fragments: str) -> None:
    """Exit code 2 and one line on standard error holding every fragment, no traceback."""
    assert code == 2
    assert err.startswith("activelab: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in out + err
    for fragment in fragments:
        assert fragment in err, err
