"""Prepare a data set once: `python -m gan.prepare SOURCE OUT --resolution R --channels C [--workers N]`.

SOURCE is a folder of images (each first-level sub-folder a class) or a named set (mnist5k, mnist,
fashion_mnist, cifar10). The images are decoded in parallel, resized and centre-cropped to R x R,
and written to OUT as a prepared set (gan.prepared) that training reads with
`data.name=prepared data.root=OUT`. An interrupted run resumes when started again.
"""

import os
import sys
from pathlib import Path
from types import SimpleNamespace

from gan.cli import ArgumentParser
from gan.config import SIZE_LIMITS
from gan.errors import EXIT_INTERRUPTED, GanError, exit_on_user_error, quote

NAMED = ("mnist5k", "mnist", "fashion_mnist", "cifar10")


def main_args(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help=f"a folder of images, or one of: {', '.join(NAMED)}")
    parser.add_argument("out", type=Path, help="the prepared set's folder (must not exist, or hold this same set)")
    parser.add_argument("--resolution", type=int, required=True, help="side of the square images, px")
    parser.add_argument("--channels", type=int, required=True, choices=(1, 3), help="1 = grayscale, 3 = RGB")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="decoding processes")
    parser.add_argument("--root", default="data", help="named sets: where torchvision downloads to")
    parser.add_argument("--chunk", type=int, default=None,
                        help="images per part file (the unit of work and of resuming); default: 32 MiB of pixels")
    return parser.parse_args(argv)


def network_resolutions() -> list[int]:
    """The sizes some convolutional network produces (the MLP takes any size)."""
    from gan.networks._resolutions import supported_resolutions
    from gan.registry import NETWORKS

    return sorted({size for name in NETWORKS.names() for size in supported_resolutions(name) or ()})


def check_resolution(resolution: int) -> None:
    """A resolution the convolutional networks can produce, checked before any decoding."""
    legal = network_resolutions()
    if resolution not in legal:
        raise GanError(f"--resolution {resolution}: the networks produce {', '.join(map(str, legal))} px; "
                       "choose one of those")  # fmt: skip


def source_for(text: str, root: str, channels: int, resolution: int):
    """A folder that exists is an image folder; otherwise a named set."""
    from gan.data import data_source

    if Path(text).is_dir():
        name, root = "image_folder", text
    elif text in NAMED:
        name = text
    else:
        raise GanError(f"SOURCE {quote(text)} is neither a folder nor a named set ({', '.join(NAMED)})")
    return data_source(SimpleNamespace(name=name, root=root, resolution=resolution, channels=channels))


@exit_on_user_error
def main(argv=None) -> int:
    args = main_args(argv)
    if args.chunk is not None and not 1 <= args.chunk <= 1_000_000:
        raise GanError(f"--chunk must be in [1, 1000000], got {args.chunk}")
    if not 1 <= args.workers <= 256:
        raise GanError(f"--workers must be in [1, 256], got {args.workers}")
    if not 1 <= args.resolution <= SIZE_LIMITS["data.resolution"]:
        raise GanError(f"--resolution must be in [1, {SIZE_LIMITS['data.resolution']}], got {args.resolution}")
    check_resolution(args.resolution)
    from gan.prepared import write_prepared

    source = source_for(args.source, args.root, args.channels, args.resolution)
    try:
        prepared = write_prepared(source, args.out, args.resolution, args.channels, args.workers, chunk=args.chunk)
    except KeyboardInterrupt:
        print(f"interrupted: {args.out} was not written; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as err:  # a full or read-only disk
        raise GanError(f"cannot write {quote(str(args.out))}: {err.strerror or err}; the work done so far is "
                       "kept: free space and run the same command again to resume") from None  # fmt: skip
    m = prepared.manifest
    print(f"{args.out}: {m['count']:,} images, {m['resolution']} px, {m['channels']} channel(s), "
          f"{max(1, len(m['class_names']))} class(es), {m['skipped']['count']} file(s) skipped")  # fmt: skip
    print(f"train with: data.name=prepared data.root={args.out} data.resolution={m['resolution']} "
          f"data.channels={m['channels']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
