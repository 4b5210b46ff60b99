"""Check a dataset YAML before training: every label and image header read once, a summary, every problem.

    python tools/check_data.py data/coco128.yaml
    python tools/check_data.py my_roboflow_export/data.yaml --splits train val

Prints per split the images, boxes per class, empty images, image and box size buckets, the repairs made when
the data is read (coordinates clipped, zero-area boxes dropped, annotation ids renumbered), then every problem,
each naming its file and line or annotation id. Exit code 1 if any problem is fatal (training would refuse the
data), 2 if the YAML itself cannot be read. Image headers are cached by file size and mtime (``--cache``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.data.check import HeaderCache, check_dataset, format_report, problem_counts  # noqa: E402
from detector.data.dataset_yaml import load_dataset_yaml  # noqa: E402
from detector.engine.start import header_cache_path  # noqa: E402
from detector.errors import DatasetError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="dataset YAML (format: coco | yolo | voc, or an ultralytics data.yaml)")
    parser.add_argument("--splits", nargs="+", help="splits to check (default: every split of the YAML)")
    parser.add_argument("--cache", help="header cache file (default: under ~/.cache/detector/check_data)")
    parser.add_argument("--no-cache", action="store_true", help="read every image header again, write no cache")
    args = parser.parse_args(argv)
    try:
        spec = load_dataset_yaml(args.data)
        if args.splits:
            unknown = [s for s in args.splits if s not in spec.splits]
            if unknown:
                raise DatasetError(f"{args.data}: no split {unknown}; the YAML defines {sorted(spec.splits)}")
            spec.splits = {s: spec.splits[s] for s in args.splits}
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cache = HeaderCache(None if args.no_cache else (args.cache or header_cache_path(args.data)))
    reports = check_dataset(spec, cache)
    cache.save()
    print(format_report(spec, reports))
    return 1 if problem_counts(reports)["fatal"] else 0


if __name__ == "__main__":
    sys.exit(main())
