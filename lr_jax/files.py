"""Atomic file writes (a temporary file in the same folder, renamed over the target when complete) and the one
error a failed write raises, `WriteError`, naming the file and what was kept. Every result, record and manifest of
a run is written through here."""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any, Callable, Optional


class WriteError(OSError):
    """A file or checkpoint of the run could not be written (full disk, quota, read-only or failing file system);
    the message names the path and what was kept."""


def write_failure(error: BaseException) -> Optional[str]:
    """'<strerror> (errno N)' when `error`, or an error it was raised from, is an operating-system error: from
    Python (OSError) or from TensorStore, orbax's array writer (its message ends with [os_error_code='N']); None
    for any other error."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        code = error.errno if isinstance(error, OSError) else None
        match = re.search(r"os_error_code='?(\d+)", str(error))
        code = code or (int(match.group(1)) if match else None)
        if code:
            return f"{os.strerror(code)} (errno {code})"
        error = error.__cause__ or error.__context__
    return None


def umask_mode() -> int:
    """The mode a plain `open(path, "w")` gives a new file: 0o666 less the process's umask (0644 by default)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: str, write: Callable[[Any], None], binary: bool = False) -> None:
    """Calls `write(file)` on a temporary file in `path`'s folder, then renames it over `path`; on any error
    the temporary file is removed and `path` is left as it was. A failed write (disk full, ...) raises
    WriteError naming `path`. The file gets the umask's mode, like any file the user writes (mkstemp's
    temporary files are 0600, which would hide results from collaborators on a shared workdir)."""
    folder, tmp = os.path.dirname(os.path.abspath(path)), None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
        os.fchmod(fd, umask_mode())
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        reason = None if isinstance(error, WriteError) else write_failure(error)
        if reason is None:
            raise
        kept = "the previous file is kept" if os.path.exists(path) else "it did not exist before"
        raise WriteError(f"cannot write {path}: {reason}; {kept}") from None


def write_json_atomic(path: str, payload: Any) -> None:
    """Writes JSON atomically (temporary file in the same folder, then rename)."""
    write_atomic(path, lambda f: json.dump(payload, f, indent=2, sort_keys=False))


def write_text_atomic(path: str, text: str) -> None:
    """Writes text atomically (temporary file in the same folder, then rename)."""
    write_atomic(path, lambda f: f.write(text))
