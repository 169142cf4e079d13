"""``python -m search.gridreport``: what a recorded grid says (the command lives in
search.grid.report)."""

from search.grid.report import main

if __name__ == "__main__":
    raise SystemExit(main())
