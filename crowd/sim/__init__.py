"""`python -m crowd simulate KIND ...`: simulations on synthetic crowds (no language model).

KIND is `grouping` (the paper's experiment 2: grouping methods, points rules and Shapley
values), `convergence` or `poisoning`. Each kind lives in its own module, imported on demand,
exposing `main(argv) -> int` where argv[0] is the kind itself.
"""

from __future__ import annotations

import importlib

KINDS: dict[str, tuple[str, str]] = {
    "grouping": ("crowd.sim.grouping", "grouping methods, points rules and Shapley values"),
    "convergence": ("crowd.sim.convergence", "how fast the crowd's model converges"),
    "poisoning": ("crowd.sim.poisoning", "a hostile share of the crowd, defended or not"),
}


def main(argv: list[str]) -> int:
    """Dispatch `["simulate", KIND, ...]` to KIND's module with `[KIND, ...]`."""
    args = argv[1:] if argv and argv[0] == "simulate" else argv
    if not args or args[0] not in KINDS:
        print("usage: python -m crowd simulate KIND [options]\n\nkinds:")
        for name, (_, what) in KINDS.items():
            print(f"  {name:<12} {what}")
        return 0 if args and args[0] in ("-h", "--help") else 2
    module_name = KINDS[args[0]][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        print(f"`simulate {args[0]}` is not available in this build ({module_name} is missing)")
        return 2
    return int(module.main(args) or 0)
