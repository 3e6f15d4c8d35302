"""Model files from the Hugging Face Hub, for Llama.from_pretrained (needs `huggingface_hub`).

    path = hub.download("org/Model-GGUF", "*Q4_K_M.gguf")       # -> the local GGUF

`filename` and each of `additional_files` is a file of the repository or an fnmatch pattern
that must match exactly one (split models: the first shard as `filename`, the others in
`additional_files`, all downloaded into the same folder so llama.cpp finds them). Offline
(`HF_HUB_OFFLINE=1`, or no network) the repository's listing comes from the local cache, so a
model downloaded once loads again without the network.
"""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import List, Optional, Sequence, Union

__all__ = ["download", "HubFileNotFoundError"]

_GLOB_CHARS = frozenset("*?[")


class HubFileNotFoundError(ValueError):
    """No file (or more than one) of the repository matches the name or pattern given."""


def _hub():
    try:
        import huggingface_hub
    except ImportError as e:
        raise ImportError("Llama.from_pretrained needs the huggingface_hub package: "
                          "pip install huggingface-hub") from e
    return huggingface_hub


def _repo_files(hub, repo_id: str, revision: Optional[str],
                cache_dir: Optional[Union[str, os.PathLike]]) -> List[str]:
    """Every file of the repository, relative to its root: from the Hub, or (offline) from
    the cached snapshot."""
    try:
        return list(hub.list_repo_files(repo_id, revision=revision))
    except Exception as online_error:          # offline, no network, gated: try the cache
        try:
            snap = Path(hub.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                              local_files_only=True))
        except Exception:
            raise online_error from None
        return sorted(str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file())


def _one_match(pattern: str, files: Sequence[str], repo_id: str) -> str:
    hits = [f for f in files if fnmatch.fnmatch(f, pattern)]
    if len(hits) == 1:
        return hits[0]
    listing = ", ".join(f for f in files if f.endswith(".gguf")) or ", ".join(files) or "none"
    if not hits:
        raise HubFileNotFoundError(f"no file of {repo_id} matches {pattern!r}; its GGUF files: "
                                   f"{listing}")
    raise HubFileNotFoundError(f"{len(hits)} files of {repo_id} match {pattern!r} "
                               f"({', '.join(hits)}); give a pattern that matches one")


def download(repo_id: str, filename: str, additional_files: Optional[Sequence[str]] = None,
             *, local_dir: Optional[Union[str, os.PathLike]] = None,
             cache_dir: Optional[Union[str, os.PathLike]] = None,
             revision: Optional[str] = None) -> str:
    """Download (or find in the cache) the matching files; returns the local path of the
    `filename` match."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id must look like 'owner/name', got {repo_id!r}")
    if not isinstance(filename, str) or not filename:
        raise ValueError(f"filename must be a file name or pattern, got {filename!r}")
    if additional_files is not None and (isinstance(additional_files, str) or not all(
            isinstance(f, str) and f for f in additional_files)):
        raise ValueError("additional_files must be a list of file names or patterns")
    hub = _hub()
    patterns = [filename] + list(additional_files or [])
    if any(_GLOB_CHARS & set(p) for p in patterns):
        files = _repo_files(hub, repo_id, revision, cache_dir)
        names = [_one_match(p, files, repo_id) for p in patterns]
    else:
        names = patterns
    paths = [hub.hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir,
                                 local_dir=local_dir) for name in names]
    return str(paths[0])
