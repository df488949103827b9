"""Command line: `python -m fastconv info` and `python -m fastconv bench`."""
import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastconv")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the build and dispatch configuration")
    bench = sub.add_parser("bench", help="benchmark fastconv against numpy (and PyTorch where installed)")
    from fastconv._bench import add_arguments, run
    add_arguments(bench)
    args = parser.parse_args(argv)
    if args.command == "info":
        from fastconv import show_config
        show_config()
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
