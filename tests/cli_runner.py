"""Run the `genforge` command line in the test process, as `genforge ARGS...` would run."""

from __future__ import annotations


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `genforge ARGS` run through `genforge.cli.main`."""
    from genforge.cli import main

    monkeypatch.setattr("sys.argv", ["genforge", *map(str, args)])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
