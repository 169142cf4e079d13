"""The sweep's Optuna study, on local disk or object storage: ``open_study_storage(sweep_uri)``,
a JournalStorage on the journal backend the sweep's storage gives.

Local disk: Optuna's own journal file, ``optuna.journal`` in the sweep directory
(``optuna-dashboard runs/NAME/optuna.journal`` opens it). Object storage: the same journal on
the sweep's study log (search.storage.journal). Anyone reads it (``export``, to open it in
optuna-dashboard):

    python -m search.sweep.study export NAME --storage s3://bucket/runs   # writes NAME.optuna.journal
    optuna-dashboard NAME.optuna.journal
"""

from __future__ import annotations

import json
import sys

from optuna.storages import BaseStorage, JournalStorage

from space_defs.cli import Parser, UsageError

from .. import internals
from ..storage import open_storage
from ..storage import uri as storage
from ..storage.errors import StoreError
from ..storage.journal import ObjectJournalBackend
from ..storage.local import JOURNAL_FILE

__all__ = ["open_study_storage", "ObjectJournalBackend", "read_journal", "export", "flush",
           "JOURNAL_FILE"]


def open_study_storage(sweep_uri: str) -> BaseStorage:
    """The Optuna storage of the sweep whose directory is ``sweep_uri`` (a path, or a URI with
    its '?options', e.g. s3://b/runs/demo?endpoint_override=127.0.0.1:9000&scheme=http). On
    object storage only the driver holding the sweep's lease may write to it."""
    return JournalStorage(open_storage(sweep_uri).journal())


def read_journal(sweep_uri: str) -> list[dict]:
    """Every log of the sweep's study, in order (empty when it has none)."""
    return open_storage(sweep_uri).journal_logs()


def flush(storage: BaseStorage) -> None:
    """Write what the study's backend holds back, if it holds anything back."""
    backend = internals.journal_backend(storage)
    if isinstance(backend, ObjectJournalBackend):
        backend.flush()


# -- optuna-dashboard -----------------------------------------------------------------------
def export(sweep_uri: str, out: str) -> int:
    """Write the sweep's study as one Optuna journal file (which optuna-dashboard opens);
    the number of logs written. The file is a copy: the sweep never reads it back."""
    from trainer.atomic import write_atomic

    logs = read_journal(sweep_uri)
    if not logs:
        raise UsageError(f"there is no study in {sweep_uri}: check --storage and the sweep name "
                         "(python -m search.query sweeps lists them)")
    write_atomic(out, "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode())
    return len(logs)


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m search.sweep.study", description="The sweep's Optuna study.")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="copy the study to a local journal file for optuna-dashboard")
    e.add_argument("name", help="the sweep's name (--name of search.run)")
    e.add_argument("--storage", default=storage.DEFAULT_STORAGE,
                   help=f"local path or s3:// URI holding the sweeps ({storage.DEFAULT_STORAGE})")
    e.add_argument("--out", help="the journal file to write (default: NAME.optuna.journal)")
    args = p.parse_args(argv)
    try:
        from ..db.store import check_sweep_name

        check_sweep_name(args.name)
        out = args.out or f"{args.name}.optuna.journal"
        n = export(storage.join(args.storage, args.name), out)
    except (UsageError, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote the study of sweep {args.name!r} ({n} journal entries) to {out}\n"
          f"open it with: optuna-dashboard {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
