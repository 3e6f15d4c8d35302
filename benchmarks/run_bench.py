#!/usr/bin/env python
"""Run the pyllamacy benchmark (same as `pyllamacy bench`); see benchmarks/README.md.

    python benchmarks/run_bench.py --reps 5 --markdown >> benchmarks/RESULTS.md
"""
import glob
import os
import sys

if __name__ == "__main__":
    # works from a source checkout with the extension built in place, or an installed pyllamacy
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if glob.glob(os.path.join(root, "pyllamacy", "_llama*.so")):
        sys.path.insert(0, root)
    from pyllamacy.bench import main

    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
