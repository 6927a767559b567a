"""``python -m mdtui``: the same entry point as the ``mdtui`` console script."""

from __future__ import annotations

from mdtui.cli import main

if __name__ == "__main__":
    main()
