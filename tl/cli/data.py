"""``python -m tl data ...``: the made-in-the-app datasets from the command line (scripts,
tests, and anyone whose photos are already on disk). Each command is one call into
:mod:`tl.data.made`; a made dataset is then trained as ``--dataset data:NAME``."""

import json
import sys
from pathlib import Path

from tl.data.catalogue import made_name
from tl.paths import made_root
from tl.text import shown

EXIT_PARTIAL = 1  # some files were refused (each said on stderr); the others were added


def add_parser(sub, runs_dir_help: str) -> None:
    """The ``data`` command and its subcommands."""
    data = sub.add_parser("data", help="make and edit your own datasets of photos (as on the Data page)")
    verbs = data.add_subparsers(dest="data_command", metavar="{list,add,remove,show,export,import,delete}")

    def verb(name, text, handler):
        parser = verbs.add_parser(name, help=text, description=text)
        parser.add_argument("--runs-dir", help=runs_dir_help + " Made datasets live in <runs>/.data/made, "
                                                               "or $TL_DATA_DIR/made when it is set.")
        parser.set_defaults(handler=handler)
        return parser

    verb("list", "list the made datasets", cmd_list).add_argument(
        "--json", action="store_true", help="Print one JSON list.")
    add = verb("add", "add photos to a class (the dataset and the class are made when missing)", cmd_add)
    add.add_argument("name", metavar="NAME")
    add.add_argument("class_name", metavar="CLASS")
    add.add_argument("files", nargs="+", metavar="FILE")
    remove = verb("remove", "remove one photo from a class (by its hash, as `show --photos` lists, or its file)",
                  cmd_remove)
    remove.add_argument("name", metavar="NAME")
    remove.add_argument("class_name", metavar="CLASS")
    remove.add_argument("photo", metavar="FILE_OR_HASH")
    show = verb("show", "classes, photo counts and version of a made dataset", cmd_show)
    show.add_argument("name", metavar="NAME")
    show.add_argument("--json", action="store_true", help="Print one JSON object.")
    show.add_argument("--photos", action="store_true", help="List each photo's hash too.")
    export = verb("export", "write a made dataset as a zip of class folders", cmd_export)
    export.add_argument("name", metavar="NAME")
    export.add_argument("--out", required=True, help="The zip file to write, e.g. photos.zip.")
    imported = verb("import", "start a new made dataset from a zip of class folders", cmd_import)
    imported.add_argument("name", metavar="NAME")
    imported.add_argument("zip", metavar="ZIP")
    delete = verb("delete", "delete a made dataset and its photos (names the runs that used it)", cmd_delete)
    delete.add_argument("name", metavar="NAME")
    delete.add_argument("--yes", action="store_true", help="Delete without asking.")
    data.set_defaults(handler=lambda args: (data.print_help(), 2)[1])


def cmd_list(args) -> int:
    from tl.data import made

    found = made.list_datasets(args.runs_dir)
    if args.json:
        print(json.dumps([d.summary() for d in found]))
        return 0
    if not found:
        print(f"No made datasets in {made_root(args.runs_dir)}; add photos with "
              "`python -m tl data add NAME CLASS FILE...`.")
        return 0
    for d in found:
        print(f"{d.ref:36} {d.describe()}")
    return 0


def cmd_add(args) -> int:
    from tl.data import made
    from tl.errors import DataError, UserError
    from tl.images import MAX_BYTES, read_regular_file

    class_name = made.check_name(args.class_name)  # a refused class name makes no dataset either
    made_now = False
    try:
        dataset = made.find(args.name, args.runs_dir)
    except DataError:
        dataset, made_now = made.create_dataset(made_name(args.name), args.runs_dir), True
    files, unreadable = [], []
    for path in args.files:
        try:
            files.append((path, read_regular_file(Path(path).expanduser(), f"'{shown(path, 60)}'",
                                                  MAX_BYTES + 1)))
        except UserError as exc:  # not a regular file, unreadable: one sentence already
            unreadable.append(f"{exc} It was not added.")
    report = made.add_photos(dataset, class_name, files, args.runs_dir)
    for line in unreadable + report.messages():
        print(line, file=sys.stderr)
    dataset = report.dataset
    if made_now and not report.added:  # nothing landed: leave no empty dataset behind
        made.delete_dataset(dataset)
        print(f"No photo was added, so {dataset.ref} was not made.")
        return EXIT_PARTIAL
    if made_now:
        print(f"Made dataset {dataset.ref}.", file=sys.stderr)
    print(f"{report.describe()[:-1]} to '{class_name}' of {dataset.ref}: "
          f"{dataset.counts().get(class_name, 0)} photo(s) in that class; {dataset.describe()}.")
    return EXIT_PARTIAL if unreadable or report.refused else 0


def cmd_remove(args) -> int:
    from tl.data import made

    dataset, sentence = made.remove_photo(args.name, args.class_name, args.photo, args.runs_dir)
    print(sentence)
    return 0


def cmd_show(args) -> int:
    from tl.data import made

    dataset = made.find(args.name, args.runs_dir)
    info = dataset.summary()
    info["runs"] = made.runs_using(dataset)
    if args.photos:
        info["photos_by_class"] = {name: [p.file for p in photos] for name, photos in dataset.classes.items()}
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{dataset.ref}  version {dataset.version}  ({dataset.photos} photos, "
          f"{dataset.total_bytes / 1024**2:.1f} MB; limits: {made.LIMITS.describe()})")
    for name, n in dataset.counts().items():
        print(f"  {name:30} {n:5d}")
        for photo in dataset.classes[name] if args.photos else ():
            print(f"      {photo.file}")
    if info["runs"]:
        print(f"Runs trained on it: {', '.join(info['runs'])}")
    return 0


def cmd_export(args) -> int:
    from tl.data import made

    made.export_zip(args.name, args.out, args.runs_dir)
    print(f"Wrote {args.out}.")
    return 0


def cmd_import(args) -> int:
    from tl.data import made

    dataset, problems = made.import_zip(args.name, args.zip, args.runs_dir)
    for line in problems:
        print(line, file=sys.stderr)
    print(f"Made {dataset.ref}: {dataset.describe()}.")
    return EXIT_PARTIAL if problems else 0


def cmd_delete(args) -> int:
    from tl.data import made

    dataset = made.find(args.name, args.runs_dir)
    used = made.runs_using(dataset)
    if not args.yes:
        runs = f" Runs {', '.join(used)} trained on it: they keep working, but no longer show its photos." if used else ""
        if not sys.stdin.isatty():
            print(f"Deleting {dataset.ref} ({dataset.describe()}) needs --yes.{runs}", file=sys.stderr)
            return 2
        answer = input(f"Delete {dataset.ref} ({dataset.describe()})?{runs} [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing deleted.")
            return 0
    made.delete_dataset(dataset, args.runs_dir)
    print(f"Deleted {dataset.ref}.")
    return 0
