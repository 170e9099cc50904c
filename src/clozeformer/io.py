"""Atomic writes and safe reads: the only way clozeformer touches files it owns.

Torch is imported only by the tensor functions, so the tokenizer can use this room too.

Every file is written to a temporary name in the same directory, flushed, fsynced and
renamed into place, so a killed process (or a full disk) leaves either the old file or the
new one, never half of one, and no temporary file. Weights are read from safetensors;
pickles only on explicit request and then with `weights_only=True`. File names read from a
file (a checkpoint's list of its files) go through `member`, which keeps them inside their
directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


class UnsafeFileError(ValueError):
    pass


def _umask() -> int:
    """The process umask, read without changing it (os.umask can only be read by setting it)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


# mkstemp makes 0600 files; a saved model should be as readable as any file the user creates.
_FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Replace path with data, or leave it as it was; an OSError names path (e.g. a full disk)."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, _FILE_MODE)
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):  # name the file being written, not its temporary name
            if e.errno is None:
                raise OSError(f"{path}: {e}") from e
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


@contextlib.contextmanager
def atomic_files(paths: list[Path]) -> Iterator[list[IO[bytes]]]:
    """Binary files streamed in place of `paths`: when the block ends without an error, each is
    fsynced and renamed into place in order; on an error none is, and no temporary file is left."""
    temps: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            files = []
            for path in paths:
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
                temps.append(tmp)
                if hasattr(os, "fchmod"):
                    os.fchmod(fd, _FILE_MODE)
                files.append(stack.enter_context(os.fdopen(fd, "wb")))
            yield files
            for f in files:
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in zip(temps, paths):
            os.replace(tmp, path)
    finally:
        for tmp in temps:
            Path(tmp).unlink(missing_ok=True)


def check_new_dir(path: str | Path, option: str) -> Path:
    """An output directory a command will fill: new or empty, and not a file nor under one. Checked
    before any work, so nothing there is overwritten or mixed with the new files."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise ValueError(f"{option} {path}: {p} is a file, not a directory")
            break
    if path.is_dir() and any(path.iterdir()):
        raise ValueError(f"{option} {path} is not empty; give a new or empty directory")
    return path


def check_output_file(path: str | Path, option: str, *, kinds: tuple[str, ...], inputs: tuple = ()) -> Path:
    """A file a command will write: not a directory, in a directory that exists, and, where it exists, a
    file of the `kinds` (suffixes) the command writes and none of its `inputs` (checked before any work: a
    model's config.json or the input file itself was overwritten)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a directory; give a file name")
    if not path.parent.is_dir():
        raise ValueError(f"{option} {path}: {path.parent} is not an existing directory")
    if path.exists():
        if any(Path(i).exists() and path.samefile(i) for i in inputs if i not in (None, "-")):
            raise ValueError(f"{option} {path} is the input; give another file")
        if path.suffix.lower() not in kinds:
            raise ValueError(f"{option} {path} exists and is not a {'/'.join(kinds)} file; give a new file, or one "
                             "this command wrote")
    return path


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def read_json(path: str | Path, *, kind: type | None = None) -> Any:
    """JSON data from path (never code); with kind, the top-level value must be of that type."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{path}: is a directory, not a JSON file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if kind is not None and not isinstance(data, kind):
        raise ValueError(f"{path}: expected a JSON {_JSON_NAMES.get(kind, kind.__name__)}, got {type(data).__name__}")
    return data


_JSON_NAMES = {dict: "object", list: "array", str: "string"}


def member(directory: str | Path, name: Any) -> Path:
    """directory / name for a file name read from a file, refusing anything that leaves directory.

    name must be a plain file name: a non-empty string without separators, not "." or "..",
    not absolute; and if directory / name is a symlink it must resolve inside directory.
    """
    directory = Path(directory)
    if (not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name
            or os.path.isabs(name)):
        raise UnsafeFileError(f"{directory}: refusing file name {name!r} (not a plain file name inside this directory)")
    path = directory / name
    if path.is_symlink() and not path.resolve().is_relative_to(directory.resolve()):
        raise UnsafeFileError(f"{path}: refusing a symlink that points outside {directory}")
    return path


def _torch_reason(e: Exception) -> str:
    """The informative part of torch.load's many-paragraph messages, on one line."""
    paragraphs = [" ".join(p.split()) for p in str(e).split("\n\n") if p.strip()] or [type(e).__name__]
    if paragraphs[0].startswith("Weights only load failed") and len(paragraphs) > 1:
        return paragraphs[1]  # e.g. "Trying to load unsupported GLOBAL posix.system …"
    return paragraphs[0].split(". ")[0]


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save as st_save  # torch loads only where tensors are written

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, st_save(tensors, metadata=metadata))


def load_tensors(path: str | Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """safetensors always; `.bin`/`.pt` pickles only with allow_pickle, and then weights_only."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    path = Path(path)
    if path.suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise UnsafeFileError(f"{path}: refusing to unpickle a {path.suffix} file (it can run code); "
                                  "convert it to safetensors or pass allow_pickle=True / --allow-pickle")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such file") from None
        except pickle.UnpicklingError as e:  # weights_only met something beyond tensors and plain containers
            raise UnsafeFileError(f"{path}: refused by weights_only: {_torch_reason(e)}") from None
        except (RuntimeError, EOFError, ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"{path}: not a readable torch file ({_torch_reason(e)})") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path}: expected a flat dict of tensors (a state_dict), got {type(state).__name__}")
        return state
    try:
        return st_load(path.read_bytes())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (SafetensorError, ValueError) as e:
        raise ValueError(f"{path}: not a valid safetensors file ({e})") from None
