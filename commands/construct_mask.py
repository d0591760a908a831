"""Merge single-task tickets into the mask of a multi-task run (``mtl-construct-mask``, ``construct_mtl_mask.py``).

    mtl-construct-mask --tickets rte=PATH mrpc=PATH ... --mode union|intersection|vote:K|per-task \
        --out FILE [--json FILE] [--relabel]

PATH is a single-task mask file (e.g. ``super_ticket.safetensors``) or a directory holding
``super_ticket.safetensors``. ``per-task`` writes every task's mask into one file, so that each
batch of a multi-task run is gated by its own task's mask. A ticket whose metadata says it was cut for
another task is refused unless ``--relabel``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from basics.cli import OneLineParser, run_main
from basics.errors import UserError
from masks.construct import TICKET_FILE, construct, parse_tickets
from masks.report import format_report


def main(argv: Sequence[str] | None = None) -> int:
    def go() -> None:
        parser = OneLineParser(prog="construct_mtl_mask.py", description=__doc__.splitlines()[0])
        parser.add_argument("--tickets", nargs="+", required=True, metavar="TASK=PATH",
                            help=f"single-task mask files (or directories holding {TICKET_FILE})")
        parser.add_argument("--mode", default="union",
                            help="union (default) | intersection | vote:K (kept by at least K tasks) | per-task")
        parser.add_argument("--out", type=Path, required=True, help="the mask file to write")
        parser.add_argument("--json", type=Path, default=None, help="also write the printed numbers as JSON")
        parser.add_argument("--relabel", action="store_true",
                            help="use a ticket for the task it is given for even when its metadata names another task")
        args = parser.parse_args(argv)
        try:
            report = construct(parse_tickets(args.tickets), args.mode, args.out, args.json, relabel=args.relabel)
        except UserError as exc:  # one line, whatever the message (file errors can embed newlines)
            raise UserError(" ".join(str(exc).split())) from exc
        print(format_report(report))

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
