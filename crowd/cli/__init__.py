"""Command-line tools that `python -m crowd` dispatches to; each module exposes
`main(argv) -> int` (argv[0] is the command's name)."""
