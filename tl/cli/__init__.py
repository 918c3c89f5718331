"""``python -m tl``: train, list runs and registries, run a queued run (for the app).

The package face: :func:`main` and the top-level parser, which wires in the subcommands of
the modules beside it (:mod:`.train`: train and the hidden worker; :mod:`.runs`: runs,
predict, list, download, export; :mod:`.compare`; :mod:`.data`: ``tl data ...``;
:mod:`.check`: ``tl check``; :mod:`.suggest`: ``tl suggest``), and the ``--verbose`` switch
of :mod:`.stderr`'s filter. The handlers call the same functions the app calls
(:func:`tl.training.prepare` and :func:`tl.training.execute`). Errors a user can cause print
one sentence and exit 2.
"""

import argparse
import json
import os
import sys

from tl.cli import check, compare, data, runs, suggest, train
from tl.cli.common import EXIT_USAGE, RUNS_DIR_HELP
from tl.cli.stderr import own_lines_on_stderr
from tl.errors import UserError

VERBOSE_HELP = ("Also show what other libraries print to stderr (TensorFlow's start-up lines, Python warnings); "
                "without it stderr holds only this program's own lines.")
HIDDEN = ("worker",)  # internal: the app's job manager runs it; not for people


def main(argv=None) -> int:
    parser = _parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    public = _public_commands(parser)
    command = next((arg for arg in argv if not arg.startswith("-")), None)  # --verbose may come first
    if command is not None and command not in public + list(HIDDEN):
        # argparse's own message would list the hidden commands among the choices
        parser.error(f"unknown command {command!r}; choose from {', '.join(public)}")
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    # A worker's stderr is its run's worker.log, read when a run dies: it keeps every line.
    quiet = not args.verbose and args.command not in HIDDEN
    try:
        with own_lines_on_stderr(quiet):
            return args.handler(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if getattr(args, "json", False):  # whoever parses stdout gets the reason too
            print(json.dumps({"error": str(exc)}))
        return EXIT_USAGE
    except BrokenPipeError:  # `python -m tl runs | head`: the reader has gone, so stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _public_commands(parser) -> list:
    """The subcommands a person may type, in the order they were added."""
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [name for name in subparsers.choices if name not in HIDDEN]


def _parser():
    parser = argparse.ArgumentParser(prog="python -m tl", description="Transfer Learning Studio")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command")
    train.add_parsers(sub)  # train, and the hidden worker
    runs.add_runs_parser(sub)
    runs.add_predict_parser(sub)
    runs.add_list_parser(sub)
    compare.add_parser(sub)
    runs.add_download_parser(sub)
    runs.add_export_parser(sub)
    data.add_parser(sub, RUNS_DIR_HELP)
    check.add_parser(sub, RUNS_DIR_HELP)
    suggest.add_parser(sub, RUNS_DIR_HELP)
    sub.metavar = "{" + ",".join(name for name in sub.choices if name not in HIDDEN) + "}"
    _verbose_after_commands(sub)
    return parser


def _verbose_after_commands(sub) -> None:
    """``--verbose`` after any (sub)command too, as people type it; SUPPRESS leaves the
    value of one given before the command alone when it is not repeated."""
    for command in sub.choices.values():
        command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _verbose_after_commands(action)
