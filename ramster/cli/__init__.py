"""The operator's command line: parsers (each option defined once, in `options`) and the
commands behind them. Only this package prints to a terminal and chooses exit codes."""

from ramster.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
