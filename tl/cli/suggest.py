"""``python -m tl suggest RUN --folder DIR | --zip FILE [--top N] [--json]``: rank a pool of
unlabeled photos by how much each would teach the run (:mod:`tl.suggest`)."""

import json
import sys

from tl.errors import UserError
from tl.novelty import STRICTNESS


def add_parser(sub, runs_dir_help: str) -> None:
    """The ``suggest`` command."""
    cmd = sub.add_parser("suggest", help="rank unlabeled photos by how much each would teach a finished run")
    cmd.add_argument("run_id")
    source = cmd.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", metavar="DIR", help="The pool: every image under DIR (sub-folders too).")
    source.add_argument("--zip", metavar="FILE", help=(
        "The pool: the images in a zip (any layout), checked as uploads are (odd paths, links, zip bombs "
        "refused) and unpacked into a temporary folder that is removed afterwards."))
    cmd.add_argument("--top", type=int, default=20, help="How many photos to list, best first. Default: 20.")
    cmd.add_argument("--strictness", choices=list(STRICTNESS), default="balanced",
                     help="How readily a photo counts as none of the run's classes (as `tl predict`).")
    cmd.add_argument("--runs-dir", help=runs_dir_help)
    cmd.add_argument("--json", action="store_true", help=(
        "Print one JSON object: `suggestions` (best first, each `file`, `rank`, `value`, `guess`, "
        "`confidence`, `unknown`, `novelty`, `why`), `total`, `unreadable` and `run_id`."))
    cmd.set_defaults(handler=cmd_suggest)


def cmd_suggest(args) -> int:
    """Rank the pool and print it (a table, or one JSON object)."""
    import contextlib
    from pathlib import Path

    from tl import batch, runs
    from tl.predict import Predictor
    from tl.suggest import suggest
    from tl.text import shown

    if args.top < 1:
        raise UserError(f"--top must be at least 1; got {args.top}.")
    run = runs.get(args.run_id, args.runs_dir)
    status = run.status().get("status")
    if status != "done":
        raise UserError(f"Run {run.id} is {status} and has no model to rank photos with; pick a finished run.")
    with contextlib.ExitStack() as stack:
        if args.zip:
            if not Path(args.zip).is_file():
                raise UserError(f"The zip '{shown(args.zip)}' does not exist; give the path of a zip of photos.")
            photos = stack.enter_context(batch.zip_photos(args.zip, name=f"The zip '{Path(args.zip).name}'"))
        else:
            photos = batch.folder_photos(args.folder)
        predictor = Predictor(run)
        for note in (predictor.engine_note, predictor.trust_note):
            if note:
                print(f"note: {note}", file=sys.stderr)
        ranking = suggest(predictor, photos, top=args.top, pass_rate=STRICTNESS[args.strictness])
    for name, reason in ranking.unreadable:
        print(f"error: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps(ranking.as_json()))
        return 0
    print(f"The {len(ranking.suggestions)} photos of {ranking.total} that would teach run {run.id} most, best first:")
    for item in ranking.suggestions:
        print(f"{item.rank:4}. {item.file}  ({item.why()})")
    return 0
