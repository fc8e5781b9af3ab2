"""The ``rsock`` command line: ``python -m rsock <command>``."""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="rsock", description="Python sockets with a Rust core.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    commands.add_parser("demo", help="run the socket tutorial's TCP and UDP round trips on rsock")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from rsock import _demo

        return _demo.run()
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
