"""frugal tour: run every section on built-in data and write reports/tour/."""

from __future__ import annotations

COMMAND = ("tour",)
HELP = "run every capability on built-in data; writes reports/tour/ (Markdown, PNG, JSON)"
MEASURES = True


def add_arguments(parser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        dest="quick",
        action="store_true",
        default=True,
        help="small settings, at most about five minutes on a 2-core CPU (default)",
    )
    mode.add_argument("--full", dest="quick", action="store_false", help="larger settings")
    parser.add_argument("--outdir", default="reports/tour", help="where the report goes (default: reports/tour)")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="SECTION",
        default=None,
        help="run only these sections (by module name, e.g. resnet_digits)",
    )


def run_command(args) -> dict:
    from frugal.scripts.tour import run_tour

    return run_tour(quick=args.quick, outdir=args.outdir, only=args.only)
