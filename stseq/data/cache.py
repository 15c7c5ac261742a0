"""A binary cache of preprocessed ``Interactions``: a file is parsed once, later loads
memory-map the result.

A cache is a folder of ``.npy`` files (offsets, items, timestamps, coordinates, behaviors, user
and item ids; never pickles: ``np.load(allow_pickle=False)``) plus ``manifest.json`` (the format
version, the fingerprint of the source and the options, the preprocessing report, behavior
names and each array's file, dtype and shape). Loading checks the fingerprint and every array's
dtype and shape and validates the ``Interactions`` (ranges, order); arrays are memory-mapped, so
a load reads only what is used.

Writes are atomic: the arrays of a build go to new file names, then ``manifest.json`` is
replaced (temporary file, fsync, ``os.replace``); the previous build's files are removed after.
A crash leaves either the old cache or the new one, and a damaged cache is rebuilt with a
message, never trusted.

The fingerprint of the source is its size, modification time (ns) and a hash of its first and
last MiB, so that checking it costs nothing next to parsing the file; the options are the
loader's name and its keyword arguments.

Example::

    data, status = load_cached("table", "events.csv", "runs/events/cache",
                               columns={"user": "uid", "item": "sku", "timestamp": "ts"})
    print(status)   # "built the cache ...", then "reused the cache ..." on the next call
"""

import contextlib
import hashlib
import json
import logging
import secrets
from pathlib import Path

import numpy as np

from stseq.data.interactions import Interactions, PreprocessReport
from stseq.data.loaders import LOADERS
from stseq.files import atomic_write

logger = logging.getLogger("stseq.data")

CACHE_VERSION = 1
MANIFEST = "manifest.json"
SAMPLE_BYTES = 1 << 20  # hashed from each end of the source
ARRAYS = ("offsets", "items", "timestamps", "coordinates", "behaviors", "user_ids", "item_ids")


def source_fingerprint(path):
    """{"name", "size", "mtime_ns", "sample_sha256"} of a file: what changes when it changes."""
    path = Path(path)
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(SAMPLE_BYTES))
        if stat.st_size > SAMPLE_BYTES:
            handle.seek(max(SAMPLE_BYTES, stat.st_size - SAMPLE_BYTES))
            digest.update(handle.read(SAMPLE_BYTES))
    return {"name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "sample_sha256": digest.hexdigest()}


def _fingerprint(format, path, options):
    return {"version": CACHE_VERSION, "format": format, "options": _plain(options),
            "source": source_fingerprint(path)}


def _plain(value):
    """Options as JSON values (tuples become lists; anything else must be JSON already)."""
    return json.loads(json.dumps(value, sort_keys=True, default=list))


def load_cached(format, path, cache_dir, **options):
    """``LOADERS[format](path, **options)`` through the cache in ``cache_dir``:
    (Interactions, status), status a sentence saying whether the cache was reused, built or
    rebuilt and why.

    Example::

        data, status = load_cached("taobao", "UserBehavior.csv", "cache/taobao",
                                   integer_ids=True)
    """
    if format not in LOADERS:
        raise ValueError(f"format must be one of {sorted(LOADERS)}, got {format!r}")
    cache_dir = Path(cache_dir)
    fingerprint = _fingerprint(format, path, options)
    reason = "there was none"
    if (cache_dir / MANIFEST).exists():
        try:
            data = read_cache(cache_dir, fingerprint)
            return data, f"reused the cache in {cache_dir} (source and options unchanged)"
        except _Stale as stale:
            reason = str(stale)
        except (ValueError, OSError, EOFError, KeyError, TypeError) as damaged:
            reason = f"it was damaged ({damaged})"
            logger.warning("the cache in %s is damaged, rebuilding it: %s", cache_dir, damaged)
    data = LOADERS[format](path, **options)
    write_cache(cache_dir, data, fingerprint)
    verb = "built" if reason == "there was none" else "rebuilt"
    return data, f"{verb} the cache in {cache_dir} ({reason})"


class _Stale(Exception):
    """The cache is intact but for another source or other options."""


def read_cache(cache_dir, fingerprint=None):
    """The ``Interactions`` of a cache folder, memory-mapped (arrays are read-only). With a
    ``fingerprint``, a cache of another source or other options raises ``_Stale``; a damaged
    cache raises ValueError or OSError.

    Example::

        data = read_cache("runs/events/cache")
    """
    cache_dir = Path(cache_dir)
    manifest = json.loads((cache_dir / MANIFEST).read_text(encoding="utf-8"))
    if not isinstance(manifest, dict) or manifest.get("version") != CACHE_VERSION:
        raise ValueError(f"manifest version {manifest.get('version')!r} is not "
                         f"{CACHE_VERSION}")
    if fingerprint is not None:
        kept = manifest["fingerprint"]
        if kept["source"] != fingerprint["source"]:
            raise _Stale("the source file changed")
        if kept != fingerprint:
            raise _Stale("the options changed")
    arrays = {}
    for name, entry in manifest["arrays"].items():
        if name not in ARRAYS:
            raise ValueError(f"unknown array {name!r}")
        file = cache_dir / Path(entry["file"]).name  # never outside the folder
        array = np.load(file, mmap_mode="r", allow_pickle=False)
        if str(array.dtype) != entry["dtype"] or list(array.shape) != entry["shape"]:
            raise ValueError(f"{file.name} holds {array.dtype} {list(array.shape)}, the manifest "
                             f"says {entry['dtype']} {entry['shape']}")
        arrays[name] = array
    report = PreprocessReport(**manifest["report"]) if manifest.get("report") else None
    names = manifest.get("behavior_names")
    return Interactions(arrays["offsets"], arrays["items"], arrays["timestamps"],
                        num_items=manifest["num_items"], coordinates=arrays.get("coordinates"),
                        behaviors=arrays.get("behaviors"),
                        behavior_names=tuple(names) if names is not None else None,
                        user_ids=arrays["user_ids"], item_ids=arrays["item_ids"], report=report)


def write_cache(cache_dir, data, fingerprint):
    """Save ``data`` (Interactions) in ``cache_dir`` under ``fingerprint``, atomically."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    build = secrets.token_hex(4)
    entries = {}
    for name in ARRAYS:
        array = getattr(data, name)
        if array is None:
            continue
        array = np.ascontiguousarray(array)
        if array.dtype.kind == "O":
            array = array.astype(str)
        file = f"{build}-{name}.npy"
        with atomic_write(cache_dir / file) as handle:
            np.save(handle, array, allow_pickle=False)
        entries[name] = {"file": file, "dtype": str(array.dtype), "shape": list(array.shape)}
    report = data.report
    manifest = {"version": CACHE_VERSION, "fingerprint": fingerprint, "arrays": entries,
                "num_items": data.num_items, "behavior_names": (
                    list(data.behavior_names) if data.behavior_names is not None else None),
                "report": None if report is None else {
                    "source": report.source, "rows": report.rows, "dropped": report.dropped,
                    "first_lines": report.first_lines, "users": report.users,
                    "items": report.items, "events": report.events}}
    with atomic_write(cache_dir / MANIFEST) as handle:
        handle.write(json.dumps(manifest, indent=1, default=int).encode("utf-8"))
    for old in cache_dir.glob("*.npy"):  # files of earlier builds
        if not old.name.startswith(f"{build}-"):
            with contextlib.suppress(OSError):
                old.unlink()
