"""A folder or an archive (.tar[.gz|.bz2|.xz], .zip) as one tree of relative paths; archives are read in memory."""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import lzma
import os
import zipfile
import zlib
from typing import Iterator, Optional, Union

import numpy as np

from lr_jax.data.dataset import DataError

ARCHIVE_EXTENSIONS = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
MAX_DEPTH = 5  # a layout sits at most two folders down and an image tree is split/class/file below that
_COMPRESSION = (  # magic bytes, decompress, name
    (b"\x1f\x8b", gzip.decompress, "gzip"),
    (b"BZh", bz2.decompress, "bzip2"),
    (b"\xfd7zXZ\x00", lzma.decompress, "xz"),
)


@dataclasses.dataclass
class SourceTree:
    """Relative paths ('a/b/c', '' = the top) of a folder or an archive; archive file contents are held in `blobs`.

    Hidden names (starting with '.', e.g. .ipynb_checkpoints or macOS '._x.jpg') and __MACOSX/ are left out."""

    path: str  # the folder or archive, as the user gave it
    subdirs: dict[str, list[str]]  # folder -> names of its sub-folders, sorted
    files: dict[str, list[str]]  # folder -> names of its files, sorted
    blobs: Optional[dict[str, bytes]] = None  # archive member contents; None: read from the folder on demand

    def has_file(self, rel: str) -> bool:
        parent, _, name = rel.rpartition("/")
        return name in self.files.get(parent, ())

    def has_dir(self, rel: str) -> bool:
        return rel in self.subdirs

    def where(self, rel: str) -> str:
        """How a member is named in messages: `folder/rel` or `archive:rel`."""
        if self.blobs is None:
            return os.path.join(self.path, rel) if rel else self.path
        return f"{self.path}:{rel}" if rel else self.path

    def item(self, rel: str) -> Union[str, bytes]:
        """What a decoder reads: the file's path for a folder, its bytes for an archive."""
        return os.path.join(self.path, rel) if self.blobs is None else self.blobs[rel]

    def read(self, rel: str, what: str = "") -> bytes:
        """A file's bytes; a missing file is a DataError naming it and, if given, `what` the layout expects."""
        if not self.has_file(rel):
            raise DataError(f"{self.where(rel)} is missing" + (f" ({what})" if what else ""))
        if self.blobs is not None:
            return self.blobs[rel]
        try:
            with open(os.path.join(self.path, rel), "rb") as f:
                return f.read()
        except OSError as error:
            raise DataError(f"{self.where(rel)}: cannot read: {error.strerror or error}") from None


def is_hidden(rel: str) -> bool:
    """Folders and files no dataset holds: dot-names and the __MACOSX/ folder macOS adds to zip files."""
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.split("/"))


def walk_folder(
    root: str, with_stat: bool = False, max_depth: int = MAX_DEPTH
) -> Iterator[tuple[str, bool, Optional[os.stat_result]]]:
    """(relative path, is folder, stat if `with_stat`) of everything under `root` down to `max_depth` levels,
    symlinks followed."""
    pending = [("", 0)]
    while pending:
        rel, depth = pending.pop()
        try:
            entries = list(os.scandir(os.path.join(root, rel)))
        except OSError as error:
            raise DataError(f"{os.path.join(root, rel)}: cannot list folder: {error.strerror or error}") from None
        for entry in entries:
            if is_hidden(entry.name):
                continue
            child = f"{rel}/{entry.name}" if rel else entry.name
            try:
                is_dir = entry.is_dir()
                stat = entry.stat() if with_stat else None
            except OSError:  # a file that vanished or a dangling symlink: not part of any dataset
                continue
            yield child, is_dir, stat
            if is_dir and depth + 1 < max_depth:
                pending.append((child, depth + 1))


def _index(path: str, dirs, files, blobs=None) -> SourceTree:
    """Builds the parent -> children maps from flat lists of folder and file paths, hidden ones left out."""
    dirs, files = [d for d in dirs if not is_hidden(d)], [f for f in files if not is_hidden(f)]
    subdirs: dict[str, set] = {"": set()}
    names: dict[str, list] = {}
    for rel in list(dirs) + [f.rpartition("/")[0] for f in files if "/" in f]:
        while rel:  # a folder and every folder above it, up to one already linked to its parent
            subdirs.setdefault(rel, set())
            parent, _, name = rel.rpartition("/")
            siblings = subdirs.setdefault(parent, set())
            if name in siblings:
                break
            siblings.add(name)
            rel = parent
    for rel in files:
        parent, _, name = rel.rpartition("/")
        names.setdefault(parent, []).append(name)
    return SourceTree(
        path=path,
        subdirs={k: sorted(v) for k, v in subdirs.items()},
        files={k: sorted(v) for k, v in names.items()},
        blobs=blobs,
    )


def open_tree(path: str) -> SourceTree:
    """The tree of a folder (listed, files read later) or of an archive (read whole into memory)."""
    if os.path.isdir(path):
        dirs, files = [], []
        for rel, is_dir, _ in walk_folder(path):
            (dirs if is_dir else files).append(rel)
        return _index(path, dirs, files)
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror or error}") from None
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")) or path.lower().endswith(".zip"):
        return _open_zip(path)
    if path.lower().endswith(ARCHIVE_EXTENSIONS) or head[257:262] == b"ustar" or head.startswith(
        tuple(magic for magic, _, _ in _COMPRESSION)
    ):
        return _open_tar(path)
    raise DataError(
        f"{path}: neither a folder nor an archive ({', '.join(ARCHIVE_EXTENSIONS)}); "
        "pass the folder or archive that holds the dataset's files"
    )


def _open_zip(path: str) -> SourceTree:
    blobs, dirs = {}, []
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = info.filename.strip("/")
                if info.is_dir():
                    dirs.append(name)
                elif name:
                    blobs[name] = archive.read(info)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as error:
        raise DataError(f"{path}: truncated or corrupt zip archive ({error})") from None
    return _index(path, dirs, list(blobs), blobs)


def _open_tar(path: str) -> SourceTree:
    with open(path, "rb") as f:
        data = f.read()
    for magic, decompress, kind in _COMPRESSION:
        if data.startswith(magic):
            try:
                data = decompress(data)
            except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as error:
                raise DataError(f"{path}: truncated or corrupt {kind} archive ({error})") from None
            break
    blobs, dirs = {}, []
    view = memoryview(data)
    for name, is_dir, start, size in tar_members(data, path):
        if is_dir:
            dirs.append(name)
        else:
            blobs[name] = bytes(view[start : start + size])
    return _index(path, dirs, list(blobs), blobs)


def _tar_number(field: bytes, where: str) -> int:
    """A tar header number: octal text, or GNU base-256 when the top bit of the first byte is set."""
    if field[:1] and field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    try:
        return int(field.split(b"\0", 1)[0] or b"0", 8)
    except ValueError:
        raise DataError(f"{where}: corrupt tar archive (bad number {field!r} in a header)") from None


def _check_header_sums(data: bytes, positions: list[int], stored: list[int], where: str) -> None:
    """Tar header checksums (byte sum with the checksum field read as spaces; unsigned or signed), all at once."""
    blocks = np.frombuffer(data, np.uint8, count=len(data) // 512 * 512).reshape(-1, 512)
    headers = blocks[np.asarray(positions) // 512]  # tar headers start on 512-byte boundaries
    unsigned, signed = (h.sum(1, dtype=np.int64) - h[:, 148:156].sum(1, dtype=np.int64) + 8 * 32
                        for h in (headers, headers.view(np.int8)))
    bad = np.flatnonzero((unsigned != stored) & (signed != stored))
    if len(bad):
        raise DataError(f"{where}: corrupt tar archive (bad header checksum at byte {positions[bad[0]]})")


def _pax_records(block: bytes) -> dict[str, str]:
    """'LEN key=value\\n' records of a pax extended header."""
    records, pos = {}, 0
    while pos < len(block) and block[pos:pos + 1] != b"\0":
        length = int(block[pos : block.index(b" ", pos)])
        key, _, value = block[block.index(b" ", pos) + 1 : pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def tar_members(data: bytes, where: str) -> list[tuple[str, bool, int, int]]:
    """(name, is folder, data offset, size) of each file and folder in an uncompressed tar held in memory.

    Reads ustar, GNU (long names) and pax headers; links and special files are skipped. About 10 times faster
    than `tarfile` for archives of many small images; a bad header checksum, a missing end-of-archive marker or
    a member running past the end of the data is a DataError (truncated or corrupt archive)."""
    pos, size_of_data = 0, len(data)
    long_name, pax = None, {}
    members, positions, stored = [], [], []
    while True:
        if pos + 512 > size_of_data:
            _check_header_sums(data, positions, stored, where)
            raise DataError(f"{where}: truncated tar archive (no end-of-archive marker after byte {pos})")
        header = data[pos : pos + 512]
        if not any(header):
            break
        positions.append(pos)
        stored.append(_tar_number(header[148:156], where))
        size = int(pax["size"]) if "size" in pax else _tar_number(header[124:136], where)
        kind = header[156:157]
        start = pos + 512
        if start + size > size_of_data:
            _check_header_sums(data, positions, stored, where)
            raise DataError(f"{where}: truncated tar archive (member at byte {pos} needs {size} bytes)")
        pos = start + -(-size // 512) * 512
        if kind == b"L":
            long_name = data[start : start + size].rstrip(b"\0").decode("utf-8", "surrogateescape")
            continue
        if kind == b"x":
            pax = _pax_records(data[start : start + size])
            continue
        if kind in (b"g", b"K"):
            continue
        name = header[:100].split(b"\0", 1)[0]
        if header[257:262] == b"ustar" and header[345:346] != b"\0":
            name = header[345:500].split(b"\0", 1)[0] + b"/" + name
        name = pax.get("path") or long_name or name.decode("utf-8", "surrogateescape")
        long_name, pax = None, {}
        while name.startswith("./"):
            name = name[2:]
        name = name.strip("/")
        if name in ("", "."):
            continue
        if kind == b"5":
            members.append((name, True, start, 0))
        elif kind in (b"0", b"\0", b"7"):
            members.append((name, False, start, size))
    if positions:
        _check_header_sums(data, positions, stored, where)
    return members
