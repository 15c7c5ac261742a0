"""Run folders: every ``stseq train`` writes into a folder of its own and never over another
run unless told to.

    runs/<data name>/1/, 2/, 3/ ...      one folder per run, numbered in order (the number is
                                         taken atomically, so concurrent runs never share one)
    runs/<data name>/latest -> 3         a symbolic link to the newest run of that data
    runs/<data name>/3/run.json          how the run was started (command, data, models, time)
    runs/<data name>/3/<model>/          each model's checkpoint.pt, metrics and curves
    runs/<data name>/3/summary.csv       the run's models side by side (and summary.json,
                                         comparison.png)
"""

import json
import os
import re
import shutil
from pathlib import Path

from stseq.train.logs import write_json

RUN_INFO = "run.json"
LATEST = "latest"
SUMMARY_FILES = ("summary.json", "summary.csv", "comparison.png", RUN_INFO)


def data_name(spec):
    """The folder name of a ``data_spec``: ``synthetic``, ``ml-100k`` or the data file's name
    without its extension (characters other than letters, digits, ``._-`` replaced by ``_``).

    Example::

        data_name(data_spec("file", path="events.csv", format="table", columns=...))  # "events"
    """
    if spec["source"] != "file":
        return spec["source"]
    return re.sub(r"[^A-Za-z0-9._-]", "_", Path(spec["path"]).stem) or "data"


def new_run(root, name):
    """Create the next numbered run folder ``root/name/N`` and point ``root/name/latest`` at it.

    Example::

        folder = new_run("runs", "synthetic")   # runs/synthetic/4 after runs 1-3
    """
    parent = Path(root) / name
    parent.mkdir(parents=True, exist_ok=True)
    number = max(run_numbers(parent), default=0) + 1
    while True:
        try:
            (parent / str(number)).mkdir()
            break
        except FileExistsError:  # another run took this number first
            number += 1
    set_latest(parent / str(number))
    return parent / str(number)


def run_numbers(parent):
    """The run numbers present in ``parent`` (folders named by an integer)."""
    return [int(entry.name) for entry in Path(parent).iterdir()
            if entry.name.isdigit() and entry.is_dir()] if Path(parent).is_dir() else []


def set_latest(folder):
    """Point ``folder.parent/latest`` at ``folder`` (a relative symbolic link, replaced
    atomically; skipped where the file system has no symbolic links)."""
    folder = Path(folder)
    temporary = folder.parent / f".{LATEST}.{os.getpid()}"
    try:
        if temporary.is_symlink():
            temporary.unlink()
        temporary.symlink_to(folder.name, target_is_directory=True)
        os.replace(temporary, folder.parent / LATEST)
    except OSError:
        pass


def discard_run(folder):
    """Remove a new run folder that failed before it saved anything (no checkpoint in it) and
    point ``latest`` back at the newest remaining run; a run with checkpoints is kept, as
    ``--resume`` can continue it. Returns whether the folder was removed.

    Example::

        discard_run(Path("runs/synthetic/4"))   # the options were refused: forget run 4
    """
    folder = Path(folder)
    if any(folder.glob("*/checkpoint.pt")):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    numbers = run_numbers(folder.parent)
    if numbers:
        set_latest(folder.parent / str(max(numbers)))
    elif (folder.parent / LATEST).is_symlink():
        (folder.parent / LATEST).unlink()
    return True


def latest_run(root, name):
    """The folder ``root/name/latest`` points at, or None when there is no run of ``name``.

    Example::

        latest_run("runs", "synthetic")   # runs/synthetic/3
    """
    link = Path(root) / name / LATEST
    if link.is_dir():
        return link.parent / os.readlink(link) if link.is_symlink() else link
    numbers = run_numbers(Path(root) / name)
    return Path(root) / name / str(max(numbers)) if numbers else None


def claim_folder(folder, *, overwrite, resume, model_names):
    """Make ``folder`` (a run folder the user named) ready for a run. An existing folder with
    files is refused unless ``resume`` (continue it) or ``overwrite`` (its summary files and
    model folders of ``model_names`` are deleted first).

    Example::

        claim_folder(Path("runs/mine"), overwrite=False, resume=False, model_names=MODELS)
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {folder} is a file, not a folder")
    used = folder.is_dir() and any(folder.iterdir())
    if resume:
        if not used:
            raise ValueError(f"--resume: there is no run in {folder} to continue")
        return folder
    if used and not overwrite:
        raise ValueError(f"{folder} already holds a run; pass --overwrite to replace it, "
                         "--resume to continue it, or choose another --out")
    if used:
        for entry in folder.iterdir():
            if entry.name in SUMMARY_FILES and entry.is_file():
                entry.unlink()
            elif entry.name in model_names and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def read_run_info(folder):
    """The ``run.json`` of a run folder as a dict ({} when the run has none)."""
    path = Path(folder) / RUN_INFO
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not readable JSON ({error})") from None


def write_run_info(folder, info):
    """Write ``info`` (JSON-able) as the run's ``run.json``, atomically.

    Example::

        write_run_info(folder, {"command": "stseq train", "models": ["markov"]})
    """
    write_json(Path(folder) / RUN_INFO, info)
