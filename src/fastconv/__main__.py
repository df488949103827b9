"""Command line: `python -m fastconv info`, `python -m fastconv bench`,
`python -m fastconv demo` and `python -m fastconv demo segment`."""
import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    """The parser of the command line (its subcommands and their options)."""
    parser = argparse.ArgumentParser(prog="python -m fastconv")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the build and dispatch configuration")
    bench = sub.add_parser("bench", help="benchmark fastconv against numpy (and PyTorch where "
                           "installed)")
    from fastconv._bench import add_arguments
    add_arguments(bench)
    demo = sub.add_parser("demo", help="a digit classifier run fully convolutionally over a "
                          "row of digits, or (demo segment) made an FCN-8s that labels "
                          "every pixel of a page of digits (needs scikit-learn)")
    demo.add_argument("mode", nargs="?", choices=["segment"],
                      help="segment: the FCN-8s segmentation demo")
    demo.add_argument("--quick", action="store_true",
                      help="10 digits and fewer timing repeats (segment: a smaller page)")
    demo.add_argument("--plot", metavar="FILE.png",
                      help="draw the image and the score map (segment: the page, the label "
                      "maps and their errors) (needs matplotlib)")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of the split, the training and the digits drawn (default 0)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "info":
        from fastconv import show_config
        show_config()
        return 0
    if args.command == "demo":
        # imported here, so that `info` and `bench` never import sklearn
        if args.mode == "segment":
            from fastconv import _demo_segment
            return _demo_segment.run(args)
        from fastconv import _demo
        return _demo.run(args)
    from fastconv._bench import run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
