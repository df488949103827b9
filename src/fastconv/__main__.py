"""Command line: `python -m fastconv info`, `python -m fastconv bench`,
`python -m fastconv demo`, `python -m fastconv demo segment` and
`python -m fastconv demo slide`."""
import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    """The parser of the command line (its subcommands and their options)."""
    from fastconv import __version__
    parser = argparse.ArgumentParser(prog="python -m fastconv")
    parser.add_argument("--version", action="version", version=f"fastconv {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("info", help="print the build and dispatch configuration")
    bench = sub.add_parser("bench", help="benchmark fastconv against numpy (and PyTorch where "
                           "installed)")
    from fastconv._bench import add_arguments
    add_arguments(bench)
    demo = sub.add_parser("demo", help="a digit classifier run fully convolutionally over a "
                          "row of digits, or (demo segment) made an FCN-8s that labels "
                          "every pixel of a page of digits, or (demo slide) run tile by tile "
                          "on a dask cluster over a slide larger than its memory (needs "
                          "scikit-learn; slide: dask, distributed and zarr)")
    demo.add_argument("mode", nargs="?", choices=["segment", "slide"],
                      help="segment: the FCN-8s segmentation demo; slide: nn.predict_tiled "
                      "over a large zarr image")
    demo.add_argument("--quick", action="store_true",
                      help="10 digits and fewer timing repeats (segment: a smaller page)")
    demo.add_argument("--plot", metavar="FILE.png",
                      help="draw the image and the score map (segment: the page, the label "
                      "maps and their errors) (needs matplotlib)")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of the split, the training and the digits drawn (default 0)")
    slide = demo.add_argument_group("demo slide")
    slide.add_argument("--size", type=int, default=None,
                       help="the slide's side in pixels (default 32768, 1 GiB; 4096 with "
                       "--quick)")
    slide.add_argument("--workers", type=int, default=2,
                       help="dask workers of the LocalCluster (one thread each; default 2)")
    slide.add_argument("--memory-limit", default="384MiB",
                       help="each worker's memory limit (default 384MiB)")
    slide.add_argument("--dir", default=None,
                       help="where to write the slide and the class map (kept; default a "
                       "temporary directory, removed)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # (no command: what the commands are)
        parser.print_help()
        return 0
    if args.command == "info":
        from fastconv import show_config
        show_config()
        return 0
    if args.command == "demo":
        # imported here, so that `info` and `bench` never import sklearn
        if args.mode == "slide":
            from fastconv import _demo_slide
            return _demo_slide.run(args)
        if args.mode == "segment":
            from fastconv import _demo_segment
            return _demo_segment.run(args)
        from fastconv import _demo
        return _demo.run(args)
    from fastconv._bench import run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
