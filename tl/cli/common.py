"""Constants that the package face (:mod:`tl.cli`) and the command modules share: the exit
codes and the help texts of flags several commands have. Importing nothing of the package, it
lets the command modules share them without importing the face."""

EXIT_FAILED = 1
EXIT_USAGE = 2
RUNS_DIR_HELP = "Folder that holds the runs. Default: $TL_RUNS_DIR, else ./runs."
JSON_PROGRESS_HELP = "Print progress to stderr and a JSON summary as the last line of stdout."
