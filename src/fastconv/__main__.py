"""Command line: `python -m fastconv info`, `python -m fastconv bench` and
`python -m fastconv demo`."""
import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastconv")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the build and dispatch configuration")
    bench = sub.add_parser("bench", help="benchmark fastconv against numpy (and PyTorch where installed)")
    from fastconv._bench import add_arguments, run
    add_arguments(bench)
    demo = sub.add_parser("demo", help="a digit classifier run fully convolutionally over a "
                          "row of digits (needs scikit-learn)")
    demo.add_argument("--quick", action="store_true",
                      help="10 digits and fewer timing repeats (a few seconds)")
    demo.add_argument("--plot", metavar="FILE.png",
                      help="draw the image and the score map (needs matplotlib)")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of the split, the training and the digits drawn (default 0)")
    args = parser.parse_args(argv)
    if args.command == "info":
        from fastconv import show_config
        show_config()
        return 0
    if args.command == "demo":
        from fastconv import _demo  # here, so that `info` and `bench` never import sklearn
        return _demo.run(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
