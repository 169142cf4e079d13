"""``python -m search.replay``: search strategies replayed on a recorded grid (the command lives
in search.grid.replay)."""

from search.grid.replay import main

if __name__ == "__main__":
    raise SystemExit(main())
