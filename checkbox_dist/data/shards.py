"""The reader of WebDataset-style tar shards into a data/catalog.py `Catalog`: a folder of *.tar, one .tar file
or a glob; sample KEY is KEY.png|jpg + KEY.cls (the class name as text); key <shard file>/<member>. Each sample is
recorded by its byte offset and length in its shard, so any sample is one read (`Ref.encoded`).
"""

from __future__ import annotations

import glob
import tarfile
from pathlib import Path

from checkbox_dist.core.errors import UserError
from checkbox_dist.data.catalog import Catalog, Ref, make_catalog
from checkbox_dist.data.images import IMAGE_SUFFIXES


def shard_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if root.is_dir():
        return sorted(root.glob("*.tar"))
    return sorted(Path(p) for p in glob.glob(str(root)) if p.endswith(".tar"))


def scan_tar(root: Path, kind: str) -> Catalog:
    shards = shard_files(root)
    if not shards:
        raise UserError(f"data.root: no .tar shards in {root}")
    rows, bad = [], []
    for shard in shards:
        found, more_bad = _scan_shard(shard)
        rows += found
        bad += more_bad
    return make_catalog(root, kind, rows, bad)


def _linked(link: tarfile.TarInfo, target: tarfile.TarInfo) -> tarfile.TarInfo:
    """A hard-link member as the regular member it points to (tar writes a file's second name so)."""
    member = tarfile.TarInfo(link.name)
    member.type, member.size, member.offset_data = tarfile.REGTYPE, target.size, target.offset_data
    return member


def _scan_shard(shard: Path) -> tuple[list, list[str]]:
    """One shard's samples in the order of its members (WebDataset key = member name up to the first dot)."""
    images, labels, order, files = {}, {}, [], {}
    try:
        with tarfile.open(shard, "r:") as tar:
            for member in tar:
                if member.islnk() and member.linkname in files:  # a hard link: an earlier member's bytes
                    member = _linked(member, files[member.linkname])
                if not member.isfile():
                    continue
                files[member.name] = member
                base, _, suffix = member.name.partition(".")
                if base not in images and base not in labels:
                    order.append(base)
                if f".{suffix.lower()}" in IMAGE_SUFFIXES:
                    images[base] = member
                elif suffix == "cls":
                    labels[base] = tar.extractfile(member).read().decode("utf-8", "replace").strip()
    except (OSError, tarfile.TarError, EOFError) as err:
        return [], [f"{shard}: unreadable shard ({' '.join(str(err).split())[:120]})"]
    rows, bad = [], []
    for base in order:
        member = images.get(base)
        if member is None:
            bad.append(f"{shard}:{base}: a .cls without an image")
        elif not labels.get(base):
            bad.append(f"{shard}:{member.name}: no label (.cls missing or empty)")
        else:
            ref = Ref(f"{shard.name}/{member.name}", shard, offset=member.offset_data, size=member.size)
            rows.append((ref, labels[base], "", ""))
    return rows, bad


def shard_ranks(kind: str, items: list[tuple[Ref, int]], world: int) -> list[int]:
    """data.shards_by_rank: the process that reads each of `items` (the training split): the shards that hold
    training samples, in file-name order, go to the processes in turn (shard s -> process s % world). One
    UserError line when the root is not tar shards or a process would get no shard (pretrain.mix_n, which adds
    files, is refused with the key: core/config_checks.py)."""
    if kind != "tar":
        raise UserError(f"data.shards_by_rank=true assigns tar shards to processes; data.root is a {kind} dataset "
                        f"(docs/DATA.md): set data.shards_by_rank=false")
    shards = sorted({ref.path for ref, _ in items})
    if len(shards) < world:
        raise UserError(f"data.shards_by_rank=true: {world} processes but {len(shards)} shard(s) with training "
                        f"images: each process needs at least one (write more, smaller shards, or run fewer "
                        f"processes)")
    rank = {shard: s % world for s, shard in enumerate(shards)}
    return [rank[ref.path] for ref, _ in items]
