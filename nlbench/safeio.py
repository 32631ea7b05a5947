"""Files that survive a crash or a power loss, and checkpoints that prove their content.

- ``write_durably(path, chunks)``: temp file beside ``path``, fsync it, rename it into place, fsync the
  folder (the rename itself is only durable once the folder is). A failure of any kind (a full disk, a
  signal) removes the temp file, so nothing half-written is left. A power loss loses at most the file
  being written; the previous version stays whole.
- Checkpoints are ``CKPT_MAGIC + sha256 hex + b"\\n"`` followed by torch's payload. ``checkpoint_payload``
  returns the payload after checking the digest, or raises :class:`CheckpointMismatch` saying why: a
  bit flipped on disk or in transit must not resume into a wrong record. A checkpoint written before the
  header existed (a bare torch zip) is read as it is: it has nothing to check against.

Kept free of torch and of the rest of nlbench so that the store, the trainer and ``runs`` share it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

CKPT_MAGIC = b"NLBENCH-CKPT sha256="
_HEADER_LEN = len(CKPT_MAGIC) + 64 + 1


class CheckpointMismatch(ValueError):
    """A checkpoint whose content does not match the checksum written with it."""


def fsync_dir(folder: str | Path) -> None:
    """Make the entries of ``folder`` (a rename into it) durable. Filesystems that cannot fsync a
    folder (some network mounts) are left as they are: there is nothing more to do there."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_durably(path: str | Path, chunks, *, tmp: str | Path | None = None, mode: int | None = None) -> int:
    """Write the byte ``chunks`` to ``path`` through ``tmp`` (default ``<path>.tmp``): fsync, rename,
    fsync the folder. Returns the bytes written. On any exception (``KeyboardInterrupt`` included) the
    temp file is removed and the exception propagates; ``path`` keeps its previous content."""
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else path.with_name(path.name + ".tmp")
    n = 0
    try:
        with open(tmp, "wb") as f:
            if mode is not None and hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
            for c in chunks:
                f.write(c)
                n += len(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
    return n


def checkpoint_header(payload) -> bytes:
    """The header that goes before a checkpoint's torch ``payload`` (bytes or a memoryview)."""
    return CKPT_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n"


def checkpoint_payload(path: str | Path) -> bytes:
    """The torch payload of the checkpoint at ``path``, its checksum verified (a headerless checkpoint
    from before checksums is returned whole). Raises CheckpointMismatch naming what is wrong."""
    data = Path(path).read_bytes()
    if not data.startswith(CKPT_MAGIC):
        return data
    if len(data) < _HEADER_LEN or data[_HEADER_LEN - 1:_HEADER_LEN] != b"\n":
        raise CheckpointMismatch(f"its header is cut short ({len(data)} bytes)")
    want = data[len(CKPT_MAGIC):_HEADER_LEN - 1].decode("ascii", "replace")
    payload = memoryview(data)[_HEADER_LEN:]
    got = hashlib.sha256(payload).hexdigest()
    if got != want:
        raise CheckpointMismatch(f"its content does not match its sha256 (written {want[:12]}..., "
                                 f"read {got[:12]}...; {len(payload)} payload bytes): damaged on disk or cut short")
    return bytes(payload)
