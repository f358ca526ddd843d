"""How the commands word their figures."""

from __future__ import annotations


def counted(n: int, thing: str) -> str:
    """`1 line`, `2 lines`: for things whose plural takes an s."""
    return f"{n} {thing}{'' if n == 1 else 's'}"
