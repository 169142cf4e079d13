"""``python -m trainer fit ...`` trains, ``python -m trainer evaluate CHECKPOINT ...`` attacks."""

from .cli import main

raise SystemExit(main())
