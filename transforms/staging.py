"""The private folder of an output: where its temporary files live, out of the output's folder.

Finding a line file's shards again takes a listing, and Beam's ``FileSystems.match`` lists a
local pattern's folder with ``os.walk``, recursively, with two stats per file. Beside an
output in a folder of 74,000 files every match walked all of them: a dry run of 311 events
took 8 to 16 s there, 1.7 s in an empty folder (issue 17). So every temporary file of an
output ``DIR/NAME`` (its shards, its merge and salvage files, the report's counts and its
write-then-rename copies) lives in ``DIR/.NAME.beaconflow/`` and starts with ``NAME``: a
match lists that folder alone. The folder is made readable by its owner only (0700, whatever
the umask) and removed once empty, at the end of a run. On ``gs://`` and ``s3://`` the same
name is a prefix of objects, and no folder is made: listing a prefix lists nothing else.

A file that lives in a private folder already (the run's counts, in the report's) keeps its
own pieces beside itself. The releases before issue 17 wrote the pieces beside the output
(``DIR/NAME.parts*``, ``DIR/NAME.tmp*``); :func:`old_pieces` still finds them, for the run
after an upgrade, with one listing of the folder's names: not recursive, no stat per file.
"""

from __future__ import annotations

import errno
import os

from apache_beam.io.filesystems import FileSystems

from beaconflow.delivery.ledger import make_directories

#: The end of a private folder's name: ``.NAME.beaconflow``.
SUFFIX = ".beaconflow"

#: Local folders listed once already: folder -> the names in it (see :func:`old_pieces`).
Listed = dict[str, list[str]]


def is_remote(path: str) -> bool:
    """Whether ``path`` is an object store's (``gs://``, ``s3://``): no folders to make there."""
    return "://" in path


def is_staging_dir(folder: str) -> bool:
    """Whether ``folder`` is an output's private folder (``.NAME.beaconflow``)."""
    name = folder.rpartition("/")[2]
    return name.startswith(".") and name.endswith(SUFFIX) and len(name) > len(SUFFIX) + 1


def staging_dir(path: str) -> str:
    """The private folder of the output ``path``: ``DIR/.NAME.beaconflow``.

    For a file in a private folder already, that folder.
    """
    folder, slash, name = path.rpartition("/")
    if is_staging_dir(folder):
        return folder
    return f"{folder}{slash}.{name}{SUFFIX}"


def staged(path: str) -> str:
    """What the names of ``path``'s temporary files start with: ``DIR/.NAME.beaconflow/NAME``."""
    return f"{staging_dir(path)}/{path.rpartition('/')[2]}"


def temporary(path: str, label: str) -> str:
    """A temporary file of ``path`` in its private folder: ``.../NAME.tmp-LABEL``.

    Its name is one of the ``NAME.tmp*`` that a later run's leftover removal deletes.
    """
    return f"{staged(path)}.tmp-{label}"


def make_staging(path: str) -> None:
    """Make the private folder of ``path`` (0700) and the output's folder, if they are missing.

    Nothing to make on ``gs://`` and ``s3://``. A file in the way of the folder is a
    NotADirectoryError that names it.
    """
    if is_remote(path):
        return
    folder = staging_dir(path)
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        _check_folder(folder)
        return
    except FileNotFoundError:  # the output's own folder is not there (yet, or any more)
        make_directories(os.path.dirname(folder))
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:  # another worker made it meanwhile
            _check_folder(folder)
            return
    os.chmod(folder, 0o700)  # the umask may have taken bits away: the owner needs all three


def _check_folder(folder: str) -> None:
    if not os.path.isdir(folder):
        reason = f"a file is in the way of its temporary folder {folder}"
        raise NotADirectoryError(errno.ENOTDIR, reason, folder)


def remove_staging(path: str) -> bool:
    """Remove the private folder of ``path`` if it is empty; whether it is gone.

    A folder that still holds something (the shards a failed merge kept, a killed run's
    pieces) stays: the next run salvages or removes them.
    """
    if is_remote(path):
        return True
    try:
        os.rmdir(staging_dir(path))
    except FileNotFoundError:
        return True
    except OSError:  # not empty; or its folder is read-only now: nothing is lost either way
        return False
    return True


def old_pieces(path: str, listed: Listed | None = None) -> list[str]:
    """The pieces of ``path`` that a run of a release before issue 17 left beside it.

    ``PATH.parts*`` and ``PATH.tmp*``, sorted. A local folder is listed by name only (one
    ``listdir``, not recursive, no stat per file), once per ``listed``: the outputs of a run
    usually share a folder. On ``gs://`` and ``s3://``, a listing of each prefix. A file in
    a private folder has none: its pieces were never anywhere else.
    """
    folder, slash, name = path.rpartition("/")
    if is_staging_dir(folder):
        return []
    if is_remote(path):
        return matching(f"{path}.parts*") + matching(f"{path}.tmp*")
    names = None if listed is None else listed.get(folder)
    if names is None:
        try:
            names = os.listdir(folder or ".")
        except FileNotFoundError:
            names = []
        if listed is not None:
            listed[folder] = names
    prefixes = (f"{name}.parts", f"{name}.tmp")
    found = (f"{folder}{slash}{n}" for n in names if n.startswith(prefixes))
    return sorted(p for p in found if not os.path.isdir(p))


def matching(pattern: str) -> list[str]:
    """The files ``pattern`` matches, sorted (Beam's FileSystems: local, ``gs://``, ``s3://``).

    Locally Beam walks the folder of the pattern's fixed part, recursively: give patterns in
    a private folder, never in an output's own folder.
    """
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
