"""``python -m arrowquant`` and the ``arrowquant`` console script: the Rust command line."""

from __future__ import annotations

import sys


def main() -> None:
    """Run the ``arrowquant`` command line (convert, dequantize, sql, import, demo)."""
    import signal

    from . import _internal

    # The job runs in Rust with the GIL released: let Ctrl-C end the process at once. Outputs
    # are written beside their path and renamed at the end, so nothing partial is left at OUT.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(_internal.cli_main(["arrowquant", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
