"""``python -m cmperf ...``: the ``cmperf`` command line (cmperf.cli.main), for environments without the
console script on PATH."""

from .cli import main

if __name__ == "__main__":
    main()
