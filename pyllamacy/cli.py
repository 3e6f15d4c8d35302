"""The ``pyllamacy`` command (also ``python -m pyllamacy``).

    pyllamacy info [--json]                     versions, llama.cpp commit, CPU variant, backends
    pyllamacy complete [PROMPT] [options]       stream a completion to stdout
    pyllamacy bench [options]                   pyllamacy vs llama-bench vs llama-cpp-python
    pyllamacy fetch-model                       download the default model, print its path
    pyllamacy quantize SRC DST TYPE             re-quantize a GGUF file
    pyllamacy serve-ray --config F --replicas N the server as Ray Serve replicas (docs/SCALE.md)

Exit codes: 0 success, 1 failure while running, 2 bad input (bad arguments, missing or invalid
model file), 130 interrupted (Ctrl-C), 141 output pipe closed. Errors are one line on stderr;
set PYLLAMACY_DEBUG=1 to see the traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Iterator, List, Optional

from pyllamacy.defaults import (LAST_N_TOKENS_SIZE, LORA_SCALE, MIN_P, N_CTX_SLOT, N_GPU_LAYERS,
                                REPEAT_PENALTY, TEMPERATURE, TOP_K, TOP_P)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


class RunError(Exception):
    """A failure while running: reported as one line, exit code 1."""


def _debug() -> bool:
    return os.environ.get("PYLLAMACY_DEBUG", "") not in ("", "0")


def _error(msg: str) -> None:
    # one line, always: llama.cpp reasons quoted in exception messages may span several
    msg = " | ".join(ln.strip() for ln in str(msg).splitlines() if ln.strip())
    sys.stderr.write(f"pyllamacy: error: {msg}\n")
    sys.stderr.flush()


def _usage_error_from(e: BaseException) -> Optional[UsageError]:
    """Map the exceptions that mean "your input is wrong" to a UsageError with a clear line."""
    import pyllamacy

    if isinstance(e, IsADirectoryError):
        return UsageError(f"{e.filename}: is a directory, not a GGUF file")
    if isinstance(e, FileNotFoundError):
        return UsageError(f"{e.filename or e}: no such file")
    if isinstance(e, PermissionError):
        return UsageError(f"{e.filename or e}: permission denied")
    if isinstance(e, pyllamacy.ModelLoadError):
        return UsageError(str(e))
    if isinstance(e, MemoryError) and str(e):     # memory.check_fits: the model cannot fit
        return UsageError(str(e))
    return None


# ---------------------------------------------------------------------------------- info


def _info_data() -> dict:
    import pyllamacy

    bi = pyllamacy.build_info()
    return {
        "pyllamacy_version": pyllamacy.__version__,
        "python": sys.version.split()[0],
        "llama_cpp_commit": bi.get("llama_cpp_commit"),
        "llama_cpp_version": pyllamacy.llama_cpp_version(),
        "cpu_variant": pyllamacy.cpu_variant(),
        "default_n_threads": pyllamacy.default_n_threads(),
        "supports_gpu_offload": pyllamacy.supports_gpu_offload(),
        "supports_mmap": pyllamacy.supports_mmap(),
        "supports_mlock": pyllamacy.supports_mlock(),
        "system_info": pyllamacy.system_info().strip(),
        "backends": pyllamacy.backends(),
        "devices": pyllamacy.devices(),
        "backend_report": pyllamacy.backend_report(),
        "build_info": bi,
        "package_dir": os.path.dirname(os.path.abspath(pyllamacy.__file__)),
    }


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _model_memory(path: str) -> str:
    """The memory breakdown of `path` loaded as `pyllamacy info --model` does: fitted
    (n_gpu_layers "auto", the training context shrunk to what fits)."""
    from pyllamacy.loading import load
    with load(path, n_gpu_layers="auto", n_ctx=0) as lm:
        return (f"model {path}: n_gpu_layers={lm.n_gpu_layers} n_ctx={lm.n_ctx}\n"
                + lm.ctx.memory_breakdown().table())


def cmd_info(args) -> int:
    if getattr(args, "model", None):
        print(_model_memory(args.model))
        return EXIT_OK
    d = _info_data()
    if args.json:
        print(json.dumps(d, indent=2, default=str))
        return EXIT_OK
    out = [
        f"pyllamacy         {d['pyllamacy_version']} (Python {d['python']}, {d['package_dir']})",
        f"llama.cpp commit  {d['llama_cpp_commit'] or 'unknown (custom source)'}"
        f"  [llama_version {d['llama_cpp_version']}]",
        f"CPU variant       {d['cpu_variant']}",
        f"default threads   {d['default_n_threads']}",
        f"GPU offload       {'yes' if d['supports_gpu_offload'] else 'no'}"
        f"   mmap {'yes' if d['supports_mmap'] else 'no'}"
        f"   mlock {'yes' if d['supports_mlock'] else 'no'}",
        f"system info       {d['system_info']}",
        "backends:",
    ]
    for b in d["backends"]:
        feats = " ".join(f"{k}" if v in ("1", "") else f"{k}={v}" for k, v in b["features"].items())
        out.append(f"  {b['name']}: {feats or '(no feature list)'}")
        for dev in b["devices"]:
            mem = ""
            if dev["memory_total"]:
                mem = f", {_fmt_bytes(dev['memory_free'])} free of {_fmt_bytes(dev['memory_total'])}"
            out.append(f"    device {dev['name']} ({dev['type']}): {dev['description']}{mem}")
    out.append("backend modules:")
    for name, r in sorted(d["backend_report"].items()):
        reason = f" ({r['reason']})" if r.get("reason") else ""
        out.append(f"  {name}: {r['status']}{reason}  {r.get('path', '')}")
    bin_dir = d["build_info"].get("build_bin_dir")
    if bin_dir:
        out.append(f"llama.cpp programs {bin_dir}")
    print("\n".join(out))
    return EXIT_OK


# ----------------------------------------------------------------------------------- fit


def _n_gpu_layers_arg(v: str):
    if v == "auto":
        return v
    try:
        return int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of layers or 'auto', got {v!r}")


def _tensor_split_arg(v: str):
    """"3,1" -> [3.0, 1.0] (llama.cpp's -ts): finite, >= 0, not all zero."""
    try:
        parts = [float(x) for x in v.replace("/", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {v!r}")
    if not all(0 <= p < float("inf") for p in parts) or not any(parts):
        raise argparse.ArgumentTypeError(f"tensor split shares must be finite, >= 0 and not "
                                         f"all 0, got {v!r}")
    return parts


def cmd_fit(args) -> int:
    """Print what MODEL would use per device (a dry run: nothing is allocated)."""
    from pyllamacy.memory import estimate
    est = estimate(args.model, n_ctx=args.n_ctx, n_parallel=args.n_parallel,
                   n_gpu_layers=args.n_gpu_layers, fit_margin_mib=args.fit_target)
    print(f"model {args.model}: n_layer={est.n_layer} n_ctx_train={est.n_ctx_train}")
    print(est.table())
    from pyllamacy.memory import check_fits
    try:
        check_fits(est, args.model)
    except MemoryError as e:
        print(f"does not fit: {e}")
        return 1
    return EXIT_OK


# ------------------------------------------------------------------------------- complete


def _read_prompt(args) -> str:
    if args.prompt is not None and args.prompt != "-":
        return args.prompt
    if args.prompt is None and sys.stdin.isatty():
        raise UsageError("no prompt: give it as an argument or on stdin (use '-' to read stdin)")
    data = sys.stdin.read()
    if not data:
        raise UsageError("the prompt read from stdin is empty")
    return data


def _resolve_model(path: Optional[str]) -> str:
    """--model, else the default model (downloaded on first use); checked before loading."""
    import pyllamacy
    from pyllamacy import models

    if path is None:
        try:
            path = models.default_model_path()
        except models.ModelFetchError as e:
            raise RunError(f"could not get the default model: {e}") from e
    try:
        pyllamacy.check_gguf(path)
    except (OSError, pyllamacy.ModelLoadError) as e:
        ue = _usage_error_from(e)
        if ue is None:
            raise
        raise ue from e
    return os.fspath(path)


def _engine(requested: str):
    """The high-level Llama class, or None to use the core API (pyllamacy.llama not there)."""
    if requested == "core":
        return None
    try:
        from pyllamacy.llama import Llama
    except ImportError as e:
        if requested == "llama":
            raise RunError(f"pyllamacy.llama is not importable: {e}") from e
        if getattr(e, "name", None) != "pyllamacy.llama" or _debug():
            sys.stderr.write(f"pyllamacy: note: pyllamacy.llama failed to import ({e}); "
                             "using the core API\n")
        return None
    return Llama


def _quiet_llama_cpp(verbose: bool) -> None:
    """Without --verbose print none of llama.cpp's log: its errors still reach us as exception
    messages, and an interrupted decode would otherwise print three lines of "failed to
    decode" on Ctrl-C."""
    import pyllamacy

    pyllamacy.set_log_level("info" if verbose else "none")


class _Outcome:
    """What a completion reports besides its text."""

    def __init__(self):
        self.finish_reason: Optional[str] = None
        self.completion_tokens: Optional[int] = None


def _complete_llama(Llama, model_path: str, prompt: str, args, outcome: _Outcome) -> Iterator[str]:
    """The completion through the high-level, llama-cpp-python compatible Llama."""
    kw = dict(model_path=model_path, n_ctx=args.n_ctx, seed=args.seed, verbose=args.verbose)
    if args.threads is not None:
        kw["n_threads"] = args.threads
        kw["n_threads_batch"] = args.threads
    kw.update(n_gpu_layers=args.ngl, split_mode=args.split_mode, main_gpu=args.main_gpu,
              tensor_split=args.tensor_split)
    if args.lora is not None:
        kw["lora_path"] = args.lora
        kw["lora_scale"] = args.lora_scale
    llm = Llama(**kw)
    _quiet_llama_cpp(args.verbose)     # Llama() sets the process-wide log level itself
    try:
        sampling = dict(max_tokens=args.max_tokens, temperature=args.temperature,
                        top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                        repeat_penalty=args.repeat_penalty, stop=args.stop or None)
        if args.no_stream:
            r = llm.create_completion(prompt, stream=False, **sampling)
            outcome.finish_reason = r["choices"][0].get("finish_reason")
            outcome.completion_tokens = (r.get("usage") or {}).get("completion_tokens")
            yield r["choices"][0]["text"]
            return
        n = 0
        for chunk in llm.create_completion(prompt, stream=True, **sampling):
            choice = chunk["choices"][0]
            if choice.get("finish_reason"):
                outcome.finish_reason = choice["finish_reason"]
            if choice.get("text"):
                n += 1
                yield choice["text"]
        outcome.completion_tokens = n      # about one chunk per token
    finally:
        close = getattr(llm, "close", None)
        if close is not None:
            close()


def _core_sampler(model, args):
    """The sampler chain llama-cpp-python builds for these settings."""
    import pyllamacy

    s = pyllamacy.Sampler(model)
    if args.repeat_penalty != 1.0:
        s.penalties(LAST_N_TOKENS_SIZE, args.repeat_penalty)
    if args.temperature <= 0:
        return s.greedy()
    s.top_k(args.top_k).top_p(args.top_p).min_p(args.min_p)
    return s.temp(args.temperature).dist(seed=args.seed)


def _complete_core(model_path: str, prompt: str, args, outcome: _Outcome) -> Iterator[str]:
    """The same completion over Model/Context/Sampler/Generation (without pyllamacy.llama)."""
    from pyllamacy._text import TextAssembler, normalize_stop
    from pyllamacy.loading import load

    stop = normalize_stop(args.stop)
    lora = [] if args.lora is None else [(args.lora, args.lora_scale)]
    with load(model_path, n_gpu_layers=args.ngl, n_ctx=args.n_ctx,
              split_mode=args.split_mode, main_gpu=args.main_gpu,
              tensor_split=args.tensor_split,
              context_options={"n_threads": args.threads}, lora=lora) as loaded:
        model, ctx = loaded.model, loaded.ctx
        tokens = model.tokenize(prompt, add_special=True, parse_special=True)
        room = ctx.n_ctx - len(tokens)
        if room <= 0:
            raise UsageError(f"the prompt is {len(tokens)} tokens and does not fit in "
                             f"n_ctx={ctx.n_ctx} (use --n-ctx)")
        max_tokens = room if args.max_tokens < 0 else min(args.max_tokens, room)
        ctx.eval(tokens)
        with _core_sampler(model, args) as sampler:
            text = TextAssembler(stop=stop)
            gen = ctx.generate(sampler, max_tokens=max_tokens, stop_strings=stop or None)
            for tok in gen:
                piece = text.push(model.token_to_piece(tok))
                if piece:
                    yield piece
                if text.stopped:
                    gen.close()
                    break
            tail = text.flush()
            if tail:
                yield tail
            outcome.finish_reason = "stop" if text.stopped else gen.finish_reason
            outcome.completion_tokens = len(gen.tokens)


def cmd_complete(args) -> int:
    import pyllamacy

    if args.max_tokens == 0 or args.max_tokens < -1:
        raise UsageError("--max-tokens must be > 0 (or -1: until the context is full)")
    if args.n_ctx < 0:
        raise UsageError("--n-ctx must be >= 0 (0: the model's training context)")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be >= 1")
    if not math.isfinite(args.lora_scale):
        raise UsageError("--lora-scale must be a finite number")
    prompt = _read_prompt(args)
    model_path = _resolve_model(args.model)
    if args.lora is not None:
        try:
            pyllamacy.check_gguf(args.lora, what="LoRA adapter")
        except (OSError, pyllamacy.ModelLoadError) as e:
            ue = _usage_error_from(e)
            if ue is None:
                raise
            raise ue from e
    Llama = _engine(args.engine)
    outcome = _Outcome()
    if Llama is not None:
        gen = _complete_llama(Llama, model_path, prompt, args, outcome)
    else:
        gen = _complete_core(model_path, prompt, args, outcome)
    out = sys.stdout
    t0 = time.perf_counter()
    n_chunks = 0
    last = ""
    try:
        for text in gen:
            out.write(text)
            out.flush()
            n_chunks += 1
            last = text
    except ValueError as e:
        # settings only the model can judge: a prompt longer than n_ctx, a bad sampling value,
        # a file that is GGUF but not a model llama.cpp can load
        raise UsageError(str(e)) from e
    except OSError as e:
        ue = _usage_error_from(e)
        if ue is None:
            raise
        raise ue from e
    finally:
        gen.close()
    if out.isatty() and not last.endswith("\n"):
        out.write("\n")
        out.flush()
    if args.stats:
        dt = time.perf_counter() - t0
        n_tok = outcome.completion_tokens if outcome.completion_tokens is not None else n_chunks
        sys.stderr.write(f"[{'core API' if Llama is None else 'Llama'}: {n_tok} tokens in "
                         f"{dt:.2f} s (with model load and prompt), "
                         f"finish_reason={outcome.finish_reason}]\n")
    return EXIT_OK


# ---------------------------------------------------------------------------- fetch-model


def cmd_fetch_model(args) -> int:
    from pyllamacy import models

    try:
        path = models.fetch(models.DEFAULT_MODEL)
    except models.ModelFetchError as e:
        raise RunError(str(e)) from e
    except OSError as e:
        raise RunError(f"could not download the default model: {e}") from e
    print(path)
    return EXIT_OK


# ------------------------------------------------------------------------------ serve-ray


def cmd_serve_ray(args) -> int:
    """The server as Ray Serve replicas (pyllamacy.serve_ray; needs the `ray` extra)."""
    from pyllamacy import serve_ray

    try:
        return serve_ray.main(args)
    except ImportError as e:         # serve_ray.RayNotInstalledError: the message says the fix
        raise UsageError(str(e)) from e
    except (OSError, ValueError) as e:
        ue = _usage_error_from(e) if isinstance(e, OSError) else UsageError(str(e))
        if ue is None:
            raise
        raise ue from e


# ------------------------------------------------------------------------------- quantize


class _ProgressBar:
    """A progress bar on stderr; on a non-terminal one line per quarter."""

    def __init__(self, label: str, quiet: bool = False):
        self.label = label
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last_step = -1
        self.t0 = time.perf_counter()

    def __call__(self, frac: float) -> None:
        if self.quiet:
            return
        frac = min(max(frac, 0.0), 1.0)
        if self.tty:
            width = 30
            bar = "#" * int(frac * width)
            sys.stderr.write(f"\r{self.label} [{bar:<{width}}] {frac * 100:5.1f}%")
            if frac >= 1.0:
                sys.stderr.write(f"  {time.perf_counter() - self.t0:.1f} s\n")
        else:
            step = int(frac * 4)
            if step > self.last_step:
                self.last_step = step
                sys.stderr.write(f"{self.label}: {frac * 100:.0f}%\n")
        sys.stderr.flush()


def cmd_quantize(args) -> int:
    import pyllamacy

    if args.type.lower() not in pyllamacy.QUANT_TYPES:
        raise UsageError(f"unknown quantization type {args.type!r}; choose one of "
                         f"{', '.join(sorted(pyllamacy.QUANT_TYPES))}")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be >= 1")
    if os.path.exists(args.dst) and not args.force:
        raise UsageError(f"{args.dst} exists; pass --force to overwrite it")
    bar = _ProgressBar(f"quantize {args.type}", quiet=args.quiet)
    try:
        pyllamacy.quantize(args.src, args.dst, args.type, nthread=args.threads or 0,
                           allow_requantize=args.allow_requantize, pure=args.pure,
                           progress_callback=bar)
    except pyllamacy.QuantizeError as e:
        # llama.cpp's reason is its last error line; the warnings before it are noise here
        head, _, reason = str(e).partition(" failed: ")
        lines = [ln.strip() for ln in reason.splitlines() if ln.strip()]
        last = lines[-1] if lines else "llama.cpp gave no reason"
        for prefix in ("llama_model_quantize: ", "failed to quantize: "):
            last = last[len(prefix):] if last.startswith(prefix) else last
        if "requantiz" in last and not args.allow_requantize:
            raise UsageError(f"{head} failed: {last} (pass --allow-requantize)") from e
        raise RunError(f"{head} failed: {last}") from e
    except (OSError, ValueError) as e:
        ue = _usage_error_from(e)
        raise (ue or UsageError(str(e))) from e
    if not args.quiet:
        src_size, dst_size = os.path.getsize(args.src), os.path.getsize(args.dst)
        sys.stderr.write(f"{args.src} ({_fmt_bytes(src_size)}) -> {args.dst} "
                         f"({_fmt_bytes(dst_size)})\n")
    print(args.dst)
    return EXIT_OK


# ----------------------------------------------------------------------------------- bench


def cmd_bench(args) -> int:
    from pyllamacy import bench

    return bench.run_from_args(args)


# ---------------------------------------------------------------------------------- parser


def cmd_rpc_server(args) -> int:
    """`pyllamacy rpc-server`: exec the bundled ggml-rpc-server (its signals and exit code are
    the program's own). Bad options exit 2 before anything starts."""
    from pyllamacy import rpc

    try:
        port = rpc.check_port(str(args.port), f"--port {args.port!r}")
        cmd = rpc.server_command(args.host, port, threads=args.threads, devices=args.device,
                                 cache=args.cache)
    except ValueError as e:
        raise UsageError(str(e)) from None
    except FileNotFoundError as e:
        raise UsageError(f"{e.filename}: {e.strerror}") from None
    if not rpc.is_loopback(args.host):
        sys.stderr.write(rpc.SECURITY_WARNING.format(host=args.host, port=port))
    sys.stderr.write(f"pyllamacy: starting {' '.join(cmd)}\n")
    sys.stderr.flush()
    if args.dry_run:
        return 0
    sys.stdout.flush()
    os.execv(cmd[0], cmd)
    return 1                                            # not reached


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pyllamacy",
        description="pyllamacy: Cython bindings for llama.cpp.",
        epilog="Set PYLLAMACY_DEBUG=1 for tracebacks, PYLLAMACY_MODEL for the default model.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("info", help="versions, llama.cpp commit, CPU variant, backends, devices")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--model", "-m", default=None,
                   help="load this GGUF (fitted) and print its memory breakdown instead")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("fit", help="estimate a model's memory per device without loading it",
                       description="Print the weights, KV cache and compute buffers MODEL "
                                   "would take on each device and the host, measured by a "
                                   "dry run that allocates nothing.")
    s.add_argument("model", help="GGUF file")
    s.add_argument("-c", "--n-ctx", type=int, default=0,
                   help="context per sequence (default 0: the model's training context)")
    s.add_argument("--n-parallel", "-np", type=int, default=1, help="sequences (default 1)")
    s.add_argument("--ngl", "--n-gpu-layers", dest="n_gpu_layers", type=_n_gpu_layers_arg,
                   default="auto", help="layers to offload, or 'auto' (default): the most "
                                        "that fit")
    s.add_argument("--fit-target", type=int, default=None, metavar="MiB",
                   help="with 'auto': memory to leave free per device (default 1024)")
    s.set_defaults(func=cmd_fit)

    s = sub.add_parser("complete", help="complete a prompt, streaming the text to stdout",
                       description="Complete PROMPT (or stdin) with a GGUF model; the text "
                                   "streams to stdout as it is generated.")
    s.add_argument("prompt", nargs="?", help="the prompt; '-' or nothing: read stdin")
    s.add_argument("-m", "--model", help="GGUF file (default: $PYLLAMACY_MODEL or the default "
                                         "small model, downloaded on first use)")
    s.add_argument("-n", "--max-tokens", type=int, default=128,
                   help="tokens to generate at most (-1: until the context is full; default 128)")
    s.add_argument("--temperature", "--temp", type=float, default=TEMPERATURE,
                   help=f"0 = greedy (default {TEMPERATURE})")
    s.add_argument("--top-k", type=int, default=TOP_K, help=f"default {TOP_K} (0 = off)")
    s.add_argument("--top-p", type=float, default=TOP_P, help=f"default {TOP_P}")
    s.add_argument("--min-p", type=float, default=MIN_P, help=f"default {MIN_P}")
    s.add_argument("--repeat-penalty", type=float, default=REPEAT_PENALTY,
                   help=f"default {REPEAT_PENALTY} (off)")
    s.add_argument("--seed", type=int, default=-1, help="sampling seed (-1: random)")
    s.add_argument("-c", "--n-ctx", type=int, default=N_CTX_SLOT,
                   help=f"context size (default {N_CTX_SLOT})")
    s.add_argument("-t", "--threads", type=int, default=None,
                   help="threads (default: the CPUs this process may use)")
    s.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop when TEXT is generated (repeatable)")
    s.add_argument("--no-stream", action="store_true",
                   help="generate everything, then print it")
    s.add_argument("--ngl", "--n-gpu-layers", dest="ngl", type=_n_gpu_layers_arg,
                   default=N_GPU_LAYERS,
                   help=f"layers to offload to a GPU (-1: all; 'auto': as many as fit; default "
                        f"{N_GPU_LAYERS}, as pyllamacy.Llama)")
    s.add_argument("--split-mode", "-sm", choices=("layer", "row", "none"), default="layer",
                   help="how layers spread over several GPUs (default layer, as llama.cpp)")
    s.add_argument("--main-gpu", "-mg", type=int, default=0,
                   help="the GPU for the whole model with --split-mode none (default 0)")
    s.add_argument("--tensor-split", "-ts", type=_tensor_split_arg, default=None,
                   metavar="P0,P1,...", help="share of the model for each GPU, e.g. 3,1")
    s.add_argument("--lora", metavar="PATH", default=None,
                   help="LoRA adapter (GGUF) to apply to the model")
    s.add_argument("--lora-scale", type=float, default=LORA_SCALE,
                   help=f"its scale (default {LORA_SCALE})")
    s.add_argument("--stats", action="store_true", help="print token count and time to stderr")
    s.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's log")
    s.add_argument("--engine", choices=("auto", "llama", "core"), default="auto",
                   help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_complete)

    from pyllamacy import bench
    s = sub.add_parser("bench", help="benchmark pyllamacy against llama-bench and "
                                     "llama-cpp-python (interleaved, one process per run)",
                       description=bench.__doc__.split("\n\n")[0])
    bench.add_arguments(s)
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("fetch-model", help="download the default model and print its path")
    s.set_defaults(func=cmd_fetch_model)

    s = sub.add_parser("quantize", help="quantize a GGUF file (e.g. f16 -> q4_k_m)")
    s.add_argument("src", help="input GGUF file")
    s.add_argument("dst", help="output GGUF file")
    s.add_argument("type", help="target type, e.g. q4_0, q4_k_m, q8_0, f16")
    s.add_argument("-t", "--threads", type=int, default=None)
    s.add_argument("--allow-requantize", action="store_true",
                   help="allow re-quantizing already quantized tensors")
    s.add_argument("--pure", action="store_true", help="quantize every tensor to TYPE")
    s.add_argument("-f", "--force", action="store_true", help="overwrite DST")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's log")
    s.set_defaults(func=cmd_quantize)

    s = sub.add_parser("serve-ray", help="the server as Ray Serve replicas behind Ray's HTTP "
                                         "proxy (needs pyllamacy[ray]; docs/SCALE.md)")
    from pyllamacy import serve_ray
    serve_ray.add_arguments(s)
    s.set_defaults(func=cmd_serve_ray)

    # -- rpc-server: llama.cpp's RPC server, a model's layers on this host (pyllamacy/rpc.py)
    from pyllamacy import rpc as _rpc
    s = sub.add_parser("rpc-server", help="serve this host's devices to a model loaded "
                                          "elsewhere (llama.cpp's RPC; private networks only)",
                       description="Run llama.cpp's RPC server (the bundled ggml-rpc-server) "
                                   "so that a model loaded on another host with "
                                   "rpc_servers=HOST:PORT puts layers here. The protocol has "
                                   "no authentication: it binds 127.0.0.1 unless --host says "
                                   "otherwise; bind only to a private network.")
    _rpc.add_server_arguments(s)
    s.set_defaults(func=cmd_rpc_server)

    s = sub.add_parser("serve", add_help=False,
                       help="OpenAI-compatible server (python -m pyllamacy.server; "
                            "'serve --help' for its options)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:        # its options are the server's own (argparse would eat them)
        from pyllamacy.server.__main__ import main as serve_main
        return serve_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        import pyllamacy
        print(f"pyllamacy {pyllamacy.__version__} "
              f"(llama.cpp {pyllamacy.build_info().get('llama_cpp_commit') or 'unknown'})")
        return EXIT_OK
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if args.command != "bench":     # bench measures in child processes
            _quiet_llama_cpp(getattr(args, "verbose", False))
        return args.func(args)
    except UsageError as e:
        if _debug():
            raise
        _error(str(e))
        return EXIT_USAGE
    except RunError as e:
        if _debug():
            raise
        _error(str(e))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        try:
            sys.stdout.flush()
        except Exception:
            pass
        sys.stderr.write("\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (e.g. `pyllamacy complete ... | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as e:
        if _debug():
            raise
        import pyllamacy
        if isinstance(e, (pyllamacy.LlamaError, OSError)):
            _error(f"{type(e).__name__}: {e}")
            return EXIT_FAILURE
        raise


def _entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
