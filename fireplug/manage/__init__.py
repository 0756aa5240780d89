"""Runs after their start, and what fp left: `fp ps`, `logs`, `stop`, `pull` (control.py) and `fp gc` (gc.py)."""
