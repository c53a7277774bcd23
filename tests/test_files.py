"""ftlab.files: the old file or the new one, never half of either; folders flushed to disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ftlab.files import fsync_tree, same_file, write_text_atomically


def test_text_lands_in_a_new_folder_with_nothing_beside_it(tmp_path):
    path = write_text_atomically(tmp_path / "a" / "b.json", "{}\nnext line\n")
    assert path.read_bytes() == b"{}\nnext line\n"
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]


def test_a_write_that_fails_part_way_keeps_the_old_file_and_leaves_no_partial(tmp_path):
    path = write_text_atomically(tmp_path / "record.json", '{"kept": true}\n')
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate cannot be encoded in UTF-8
        write_text_atomically(path, "x" * 100_000 + "\ud800")
    assert path.read_text(encoding="utf-8") == '{"kept": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files via /proc (Linux)")
def test_fsync_tree_flushes_every_file_and_folder(tmp_path, monkeypatch):
    model = tmp_path / "models" / "a1b2c3d4"
    (model / "nested").mkdir(parents=True)
    (model / "adapter_model.safetensors").write_bytes(b"weights")
    (model / "nested" / "config.json").write_text("{}")
    synced: list[Path] = []
    real_fsync = os.fsync

    def record(fd: int) -> None:
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    fsync_tree(model, up_to=tmp_path)
    assert set(synced) >= {
        tmp_path,  # up_to: the folders above may be new too
        model / "adapter_model.safetensors",
        model / "nested" / "config.json",
        model / "nested",
        model,
        model.parent,  # the folder's own entry
    }
    assert synced.index(model / "nested" / "config.json") < synced.index(model / "nested")


def test_same_file_follows_the_file_not_the_spelling(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("{}\n")
    assert same_file(path, str(tmp_path / "." / "train.jsonl"))
    copy = tmp_path / "copy.jsonl"
    copy.write_text("{}\n")
    assert not same_file(path, copy)  # the same contents, another file
    assert not same_file(path, tmp_path / "missing.jsonl")
    assert not same_file(path, [{"messages": []}])  # examples in memory, not a path
