"""An output's private folder: its name, its mode, its removal, and the pieces of the old layout."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from beaconflow.transforms.staging import (
    Listed,
    is_staging_dir,
    make_staging,
    old_pieces,
    remove_staging,
    staged,
    staging_dir,
    temporary,
)


@pytest.mark.parametrize(
    ("path", "folder", "pieces"),
    [
        ("/out/dead.jsonl", "/out/.dead.jsonl.beaconflow", "/out/.dead.jsonl.beaconflow/dead.jsonl"),
        ("dead.jsonl", ".dead.jsonl.beaconflow", ".dead.jsonl.beaconflow/dead.jsonl"),
        ("gs://b/out/d.jsonl", "gs://b/out/.d.jsonl.beaconflow", "gs://b/out/.d.jsonl.beaconflow/d.jsonl"),
        ("s3://b/d.jsonl", "s3://b/.d.jsonl.beaconflow", "s3://b/.d.jsonl.beaconflow/d.jsonl"),
        # a file of a private folder (the run's counts, in the report's) stays beside itself
        ("/out/.r.json.beaconflow/r.json.tmp-t", "/out/.r.json.beaconflow", "/out/.r.json.beaconflow/r.json.tmp-t"),
    ],
)  # fmt: skip
def test_an_outputs_pieces_are_named_in_its_private_folder(
    path: str, folder: str, pieces: str
) -> None:
    assert staging_dir(path) == folder
    assert staged(path) == pieces
    assert temporary(path, "merge") == pieces + ".tmp-merge"
    assert is_staging_dir(folder)


@pytest.mark.parametrize("folder", ["/out", "/out/.beaconflow", "/out/x.beaconflow", "/out/.x"])
def test_other_folders_are_not_private_folders(folder: str) -> None:
    assert not is_staging_dir(folder)


def test_the_private_folder_is_its_owners_alone_and_goes_once_empty(tmp_path: Path) -> None:
    output = tmp_path / "new" / "dead.jsonl"  # its folder is made too
    previous = os.umask(0o777)  # takes every bit away from a new folder
    try:
        make_staging(str(output))
        make_staging(str(output))  # there already: nothing to do
    finally:
        os.umask(previous)
    folder = tmp_path / "new" / ".dead.jsonl.beaconflow"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    (folder / "dead.jsonl.parts-a").write_text("kept\n")
    assert remove_staging(str(output)) is False, "a folder holding something stays"
    (folder / "dead.jsonl.parts-a").unlink()
    assert remove_staging(str(output)) is True
    assert not folder.exists()
    assert remove_staging(str(output)) is True, "gone already"


def test_a_file_in_the_way_of_the_private_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / ".dead.jsonl.beaconflow").write_text("in the way")
    with pytest.raises(NotADirectoryError) as raised:
        make_staging(str(tmp_path / "dead.jsonl"))
    folder = tmp_path / ".dead.jsonl.beaconflow"
    assert raised.value.strerror == f"a file is in the way of its temporary folder {folder}"


def test_no_folder_is_made_on_an_object_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    make_staging("gs://bucket/out/dead.jsonl")
    assert remove_staging("gs://bucket/out/dead.jsonl") is True
    assert list(tmp_path.iterdir()) == []


def test_the_old_layouts_pieces_are_found_with_one_listing_per_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("dead.jsonl.parts-a", "dead.jsonl.tmpSend-b", "dry.jsonl.tmp-c", "other.jsonl"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / "dead.jsonl.parts-folder").mkdir()  # not a piece: pieces are files
    listings: list[str] = []
    listdir = os.listdir

    def counting(path: str) -> list[str]:
        listings.append(path)
        return listdir(path)

    monkeypatch.setattr(os, "listdir", counting)
    listed: Listed = {}
    dead, dry = str(tmp_path / "dead.jsonl"), str(tmp_path / "dry.jsonl")
    assert old_pieces(dead, listed) == [
        str(tmp_path / "dead.jsonl.parts-a"),
        str(tmp_path / "dead.jsonl.tmpSend-b"),
    ]
    assert old_pieces(dry, listed) == [str(tmp_path / "dry.jsonl.tmp-c")]
    assert old_pieces(str(tmp_path / "report.json"), listed) == []
    assert listings == [str(tmp_path)], "one listing of the folder for all its outputs"
    assert old_pieces(str(tmp_path / "none" / "dead.jsonl")) == [], "no folder, no pieces"
    # a file of a private folder has no pieces elsewhere, and nothing is listed for it
    assert old_pieces(temporary(dead, "tallies")) == []
    assert listings == [str(tmp_path), str(tmp_path / "none")]
