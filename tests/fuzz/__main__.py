"""python -m tests.fuzz --cases 5000 --seed 7 [--jobs 2] [--kinds gguf,kv] [--json out.json]
python -m tests.fuzz --seed 7 --case 123 [--keep DIR]     # one case, in this process"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from . import gguf_doc as G
from . import mutators as M
from . import runner


def _one(args) -> int:
    from . import worker
    smollm2 = args.model or runner.default_model()
    classes = set(args.gguf_classes.split(",")) if args.gguf_classes else None
    case = M.make_case(args.seed, args.case, tuple(args.kinds.split(",")) if args.kinds else M.KINDS,
                       classes)
    shown = {k: (v if not isinstance(v, str) or len(v) < 400 else v[:400] + "...") for k, v in case.items()}
    print(json.dumps(shown, indent=1, ensure_ascii=False), flush=True)
    workdir = args.keep or tempfile.mkdtemp(prefix="pyllamacy-fuzz-case-")
    os.makedirs(workdir, exist_ok=True)
    print("files in:", workdir, flush=True)
    env = worker.Env(workdir, smollm2, sandbox=not args.no_sandbox)
    if case["kind"] == "gguf":
        doc, notes = M.apply_gguf(env.base, case)
        print("mutations:", *notes, sep="\n  ", flush=True)
        if args.keep:
            p = os.path.join(args.keep, f"fuzz-{args.seed}-{args.case}.gguf")
            with open(p, "wb") as f:
                f.write(G.serialize(doc))
            print("written:", p, flush=True)
    import pyllamacy
    pyllamacy.set_log_level("warn")
    try:
        worker.run_case(env, case)
        print("ok: no exception", flush=True)
    except Exception as e:
        print(f"ok: {type(e).__name__}: {e}", flush=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="first case index")
    p.add_argument("--case", type=int, help="run this one case in-process (reproduce a failure)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before a case counts as hung")
    p.add_argument("--kinds", help=f"comma-separated subset of {','.join(M.KINDS)} "
                                   "(env PYLLAMACY_FUZZ_KINDS)")
    p.add_argument("--gguf-classes", help="comma-separated GGUF mutators to use "
                                          "(env PYLLAMACY_FUZZ_GGUF_CLASSES)")
    p.add_argument("--skip-gguf-classes", help="GGUF mutators to leave out "
                                               "(env PYLLAMACY_FUZZ_SKIP_GGUF_CLASSES)")
    p.add_argument("--list-classes", action="store_true")
    p.add_argument("--model", help="SmolLM2 GGUF (default: $PYLLAMACY_TEST_MODEL or the cache)")
    p.add_argument("--workdir", help="keep the workers' logs and files here")
    p.add_argument("--keep", help="with --case: write the case's GGUF into this folder")
    p.add_argument("--no-sandbox", action="store_true",
                   help="render templates / convert schemas in-process (finds crashes the chat "
                        "sandbox would contain)")
    p.add_argument("--json", help="write the summary here")
    p.add_argument("--backtrace", action="store_true",
                   help="let ggml print a gdb backtrace on abort (slow)")
    p.add_argument("-v", "--verbose", action="store_true", help="llama.cpp warnings in the logs")
    args = p.parse_args(argv)
    if args.list_classes:
        print("kinds:", " ".join(M.KINDS))
        print("gguf classes:", " ".join(sorted(M.GGUF_MUTATORS)))
        return 0
    if args.case is not None:
        return _one(args)
    split = lambda s: [x for x in s.split(",") if x] if s else None     # noqa: E731
    summary = runner.run(args.cases, args.seed, jobs=args.jobs, timeout=args.timeout,
                         kinds=split(args.kinds), gguf_classes=split(args.gguf_classes),
                         skip_gguf_classes=split(args.skip_gguf_classes), smollm2=args.model,
                         workdir=args.workdir, sandbox=not args.no_sandbox, verbose=args.verbose,
                         backtrace=args.backtrace, start=args.start)
    print(runner.format_report(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
