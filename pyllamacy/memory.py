"""How much memory a model takes, per device, and fitting it to the machine (issue 15).

    est = pyllamacy.estimate("m.gguf", n_ctx=8192, n_gpu_layers=-1)
    print(est.table())                    # weights, KV cache, compute buffers per device
    llm = Llama("m.gguf", n_gpu_layers="auto", n_ctx=0)     # the largest offload and context
    print(llm.memory_breakdown().table())

estimate() loads the model and a context with llama.cpp's no-alloc flag (the dry run of
llama.cpp's `--fit`, common_get_device_memory_data): tensors and buffers are measured, never
allocated, so it takes a fraction of a second even for a model larger than the machine.
fit() is llama.cpp's common_fit_params: with n_gpu_layers="auto" it picks the largest offload
(tensor_split over several devices, MoE expert tensors on the CPU first) and, with n_ctx=0, the
largest context up to the training one, that leave `fit_margin_mib` free on every device.
loading.load() calls fit() before it loads, so `Llama`, the server and the CLI share it; a
model that cannot fit even in host memory raises MemoryError there, before any load.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .defaults import FIT_MARGIN_MIB, FIT_N_CTX_MIN

__all__ = ["DeviceMemory", "MemoryBreakdown", "FitResult", "estimate", "fit", "check_fits", "MiB"]

MiB = 1024 * 1024
logger = logging.getLogger("pyllamacy")

# the dry run takes only what changes memory use; these are its keywords (see _fit.pxi)
CONTEXT_KEYS = ("type_k", "type_v", "flash_attn", "offload_kqv", "op_offload", "swa_full",
                 "kv_unified", "embeddings")


@dataclass(frozen=True)
class DeviceMemory:
    """One device's figures in bytes: its `total` and `free` memory as the backend reports it
    (for the host: system memory), and what the model uses there: `model` (weights),
    `context` (KV cache / recurrent state) and `compute` (compute buffers)."""
    name: str
    description: str
    total: int
    free: int
    model: int
    context: int
    compute: int

    @property
    def used(self) -> int:
        """model + context + compute."""
        return self.model + self.context + self.compute

    @property
    def is_host(self) -> bool:
        return self.name == "Host"


@dataclass(frozen=True)
class MemoryBreakdown:
    """Per-device memory of a model with its context: `devices` (GPUs and other offload
    devices, in the model's order) and `host` (system memory: CPU weights, CPU KV cache, CPU
    compute buffers). `n_ctx` is the context size it was measured at (0: not known)."""
    devices: Tuple[DeviceMemory, ...]
    host: DeviceMemory
    n_ctx: int = 0
    n_layer: int = 0
    n_ctx_train: int = 0

    @classmethod
    def from_rows(cls, rows: Sequence[tuple], **kw: Any) -> "MemoryBreakdown":
        mems = [DeviceMemory(*r) for r in rows]
        return cls(devices=tuple(mems[:-1]), host=mems[-1], **kw)

    @property
    def model(self) -> int:
        """Weights, all devices and the host together (bytes)."""
        return sum(d.model for d in self.all())

    @property
    def context(self) -> int:
        """KV cache (or recurrent state), all devices and the host together (bytes)."""
        return sum(d.context for d in self.all())

    @property
    def compute(self) -> int:
        """Compute buffers, all devices and the host together (bytes)."""
        return sum(d.compute for d in self.all())

    @property
    def total(self) -> int:
        return self.model + self.context + self.compute

    def all(self) -> Tuple[DeviceMemory, ...]:
        return self.devices + (self.host,)

    def table(self) -> str:
        """A text table in MiB, one line per device and the host, as llama.cpp's
        memory breakdown prints it: total, free, then used = model + context + compute."""
        head = ("device", "total", "free", "used", "model", "context", "compute")
        lines = [head]
        for d in self.all():
            label = d.name if d.is_host else f"{d.name} ({d.description})"
            lines.append((label,) + tuple(str(v // MiB) for v in
                                          (d.total, d.free, d.used, d.model, d.context,
                                           d.compute)))
        widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
        out = [f"memory breakdown [MiB]" + (f", n_ctx={self.n_ctx}" if self.n_ctx else "")]
        for r in lines:
            out.append("  ".join([r[0].ljust(widths[0])] +
                                 [r[i].rjust(widths[i]) for i in range(1, len(r))]))
        return "\n".join(out)


@dataclass(frozen=True)
class FitResult:
    """What fit() chose: the offload (`n_gpu_layers`, `tensor_split`, `tensor_buft_overrides`:
    [(tensor regex, buffer type)] for what overflows to another device or the CPU) and `n_ctx`
    (per sequence, 0 when it was given explicitly and kept); `status` is llama.cpp's
    ("success", "failure", "error")."""
    status: str
    n_gpu_layers: int
    n_ctx: int
    tensor_split: Optional[List[float]] = None
    tensor_buft_overrides: List[Tuple[str, str]] = field(default_factory=list)


def _n_gpu_layers_arg(n_gpu_layers: Union[int, str]) -> int:
    if n_gpu_layers == "auto":
        return -1
    if isinstance(n_gpu_layers, bool) or not isinstance(n_gpu_layers, int):
        raise TypeError(f"n_gpu_layers must be an int or 'auto', got {n_gpu_layers!r}")
    return n_gpu_layers


def _params(n_gpu_layers, n_ctx, n_parallel, n_batch, n_ubatch, split_mode, main_gpu,
            tensor_split, context_options) -> Dict[str, Any]:
    for name, v in (("n_ctx", n_ctx), ("n_parallel", n_parallel), ("n_batch", n_batch),
                    ("n_ubatch", n_ubatch)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {v!r}")
    if n_ctx < 0:
        raise ValueError(f"n_ctx must be >= 0 (0: the model's training context), got {n_ctx}")
    if n_parallel < 1:
        raise ValueError(f"n_parallel must be >= 1, got {n_parallel}")
    opts = {k: v for k, v in dict(context_options or {}).items() if k in CONTEXT_KEYS}
    # the context holds n_ctx tokens per sequence, as loading.load() sizes it
    return dict(n_gpu_layers=_n_gpu_layers_arg(n_gpu_layers), split_mode=split_mode,
                main_gpu=main_gpu, tensor_split=tensor_split, n_ctx=n_ctx * n_parallel,
                n_batch=n_batch, n_ubatch=n_ubatch, n_seq_max=n_parallel, **opts)


def estimate(model_path: Union[str, "os.PathLike[str]"], *, n_ctx: int = 0,
             n_gpu_layers: Union[int, str] = 0, n_parallel: int = 1, n_batch: int = 2048,
             n_ubatch: int = 512, split_mode: Union[int, str] = "layer", main_gpu: int = 0,
             tensor_split: Optional[Sequence[float]] = None,
             fit_margin_mib: Optional[int] = None,
             **context_options: Any) -> MemoryBreakdown:
    """What loading `model_path` would use per device, measured without allocating.

    n_ctx: tokens per sequence (0: the model's training context); n_parallel sequences.
    n_gpu_layers: layers to offload (-1: all; "auto": what fit() would choose, with
    `fit_margin_mib` free per device). context_options: type_k, type_v, flash_attn,
    offload_kqv, swa_full, kv_unified, embeddings."""
    from . import _llama
    unknown = set(context_options) - set(CONTEXT_KEYS)
    if unknown:
        raise TypeError(f"estimate() got unexpected keyword arguments {sorted(unknown)}")
    params = _params(n_gpu_layers, n_ctx, n_parallel, n_batch, n_ubatch, split_mode, main_gpu,
                     tensor_split, context_options)
    if n_gpu_layers == "auto":
        r = fit(model_path, n_ctx=n_ctx, n_parallel=n_parallel, n_batch=n_batch,
                n_ubatch=n_ubatch, split_mode=split_mode, main_gpu=main_gpu,
                fit_margin_mib=fit_margin_mib, check=False, **context_options)
        params.update(n_gpu_layers=r.n_gpu_layers, tensor_split=r.tensor_split,
                      tensor_buft_overrides=r.tensor_buft_overrides,
                      n_ctx=(r.n_ctx or n_ctx) * n_parallel)
    rows, hp = _llama.device_memory_estimate(model_path, **params)
    if params["n_ctx"] == 0 and n_parallel > 1:
        # llama.cpp's n_ctx=0 is the training context for all sequences together; pyllamacy's
        # is per sequence, as loading.load() sizes it
        params["n_ctx"] = hp["n_ctx_train"] * n_parallel
        rows, hp = _llama.device_memory_estimate(model_path, **params)
    n_total = params["n_ctx"] or hp["n_ctx_train"]
    return MemoryBreakdown.from_rows(rows, n_ctx=n_total, n_layer=hp["n_layer"],
                                     n_ctx_train=hp["n_ctx_train"])


def fit(model_path: Union[str, "os.PathLike[str]"], *, n_gpu_layers: Union[int, str] = "auto",
        n_ctx: int = 0, n_parallel: int = 1, n_batch: int = 2048, n_ubatch: int = 512,
        split_mode: Union[int, str] = "layer",
        main_gpu: int = 0, tensor_split: Optional[Sequence[float]] = None,
        fit_margin_mib: Optional[Union[int, Sequence[int]]] = None,
        n_ctx_min: int = FIT_N_CTX_MIN, check: bool = True,
        **context_options: Any) -> FitResult:
    """llama.cpp's common_fit_params: with n_gpu_layers="auto" the largest offload (a number
    of layers is kept as given), and with n_ctx=0 the largest
    context per sequence (at least n_ctx_min, at most the training one), that leave
    `fit_margin_mib` MiB free on every device (default FIT_MARGIN_MIB, llama.cpp's 1024;
    a list gives one per device). On a machine without a GPU the offload is 0 layers.

    Raises MemoryError (check=True), naming the figures, when even the smallest choice does
    not fit the devices and host memory together; nothing is loaded."""
    from . import _llama
    margin = FIT_MARGIN_MIB if fit_margin_mib is None else fit_margin_mib
    if isinstance(margin, (list, tuple)):
        margin_bytes = [int(m) * MiB for m in margin]
    elif isinstance(margin, bool) or not isinstance(margin, int):
        raise TypeError(f"fit_margin_mib must be an int (MiB), got {margin!r}")
    else:
        margin_bytes = margin * MiB
    if isinstance(n_ctx_min, bool) or not isinstance(n_ctx_min, int) or n_ctx_min < 0:
        raise ValueError(f"n_ctx_min must be an int >= 0, got {n_ctx_min!r}")
    unknown = set(context_options) - set(CONTEXT_KEYS)
    if unknown:
        raise TypeError(f"fit() got unexpected keyword arguments {sorted(unknown)}")
    params = _params(n_gpu_layers, n_ctx, n_parallel, n_batch, n_ubatch, split_mode, main_gpu,
                     tensor_split, context_options)
    r = _llama.fit_params(model_path, margin_bytes=margin_bytes, n_ctx_min=n_ctx_min, **params)
    # the context common_fit_params resolved (all sequences; it sets the training one for
    # n_ctx=0 before anything else), or the request where it stopped with an error
    n_total = r["n_ctx"] or n_ctx * n_parallel
    rows, hp = _llama.device_memory_estimate(
        model_path, **dict(params, n_gpu_layers=r["n_gpu_layers"], n_ctx=n_total,
                           tensor_split=r["tensor_split"],
                           tensor_buft_overrides=r["tensor_buft_overrides"]))
    n_total = n_total or hp["n_ctx_train"] * n_parallel
    # llama.cpp answers "failure" also where it only could not improve on the request; the
    # decision is taken on the figures of the choice
    if check:
        check_fits(MemoryBreakdown.from_rows(rows, n_ctx=n_total), model_path)
    ngl = r["n_gpu_layers"]
    if not rows[:-1]:
        ngl = 0                         # no device to offload to: every layer on the CPU
    elif ngl < 0 or ngl > hp["n_layer"] + 1:
        ngl = hp["n_layer"] + 1         # all of them (llama.cpp counts the output layer too)
    return FitResult(status=r["status"], n_gpu_layers=ngl,
                     n_ctx=n_total // n_parallel, tensor_split=r["tensor_split"],
                     tensor_buft_overrides=list(r["tensor_buft_overrides"]))


def check_fits(mem: MemoryBreakdown, model_path: Any = None) -> None:
    """MemoryError, with the figures, when `mem` needs more than a device has free or more
    than the host's total memory (llama.cpp's own test for the host: weights are mapped from
    the file, so free memory understates what the page cache can give back)."""
    what = f" {os.fspath(model_path)}" if model_path is not None else ""
    for d in mem.devices:
        if d.used > d.free:
            raise MemoryError(
                f"the model{what} at n_ctx={mem.n_ctx} needs {d.used // MiB} MiB on {d.name} "
                f"(weights {d.model // MiB}, KV cache {d.context // MiB}, compute "
                f"{d.compute // MiB}) but {d.free // MiB} MiB are free there")
    h = mem.host
    if h.used > h.total:
        raise MemoryError(
            f"the model{what} at n_ctx={mem.n_ctx} needs {h.used // MiB} MiB of host memory "
            f"(weights {h.model // MiB}, KV cache {h.context // MiB}, compute "
            f"{h.compute // MiB}) but the machine has {h.total // MiB} MiB; use a smaller "
            f"n_ctx or n_parallel")
