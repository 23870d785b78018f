"""The image-folder source: layout rules, sorted order, and unreadable entries as error items."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genforge.core.errors import ConfigError, DataError
from genforge.data.sources.base import resolve_source
from genforge.data.sources.folder import FolderSource


def png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    put(root / "train" / "cats" / "a.png", png(1))
    put(root / "train" / "cats" / "b.JPG", b"not really a jpeg")  # yielded anyway: process decides
    put(root / "train" / "cats" / "deep" / "c.JpEg", png(3))
    put(root / "train" / "dogs" / "d.PNG", png(4))
    put(root / "train" / "dogs" / "notes.txt", b"skipped: not an image name")
    put(root / "Valid" / "dogs" / "e.webp", png(5))
    put(root / "test" / "cats" / "f.TIFF", png(6))
    put(root / ".cache" / "g.png", png(7))  # hidden folder: skipped
    put(root / "train" / "dogs" / "._d.PNG", b"resource fork")  # hidden file: skipped
    os.symlink(root, root / "train" / "dogs" / "loop")  # a folder symlink back to the root
    os.symlink("self.png", root / "train" / "dogs" / "self.png")  # a file symlink to itself
    os.symlink("missing.png", root / "test" / "cats" / "gone.png")  # a broken symlink
    os.mkfifo(root / "test" / "cats" / "pipe.png")  # reading it would block forever
    return root


def rel(root: Path, origin: str) -> str:
    return Path(origin).relative_to(root).as_posix()


def test_layout_order_labels_and_errors(tree: Path):
    source = resolve_source(str(tree))
    assert isinstance(source, FolderSource)
    assert source.class_names == ["cats", "dogs"]
    assert json.loads(json.dumps(source.describe())) == {
        "source": "folder",
        "path": str(tree.resolve()),
        "class_names": ["cats", "dogs"],
        "follow_symlinks": True,
    }
    got = [(rel(tree, i.origin), i.split, i.label, i.error is not None) for i in source]
    assert got == [
        ("Valid/dogs/e.webp", "val", "dogs", False),
        ("test/cats/f.TIFF", "test", "cats", False),
        ("test/cats/gone.png", "test", "cats", True),
        ("test/cats/pipe.png", "test", "cats", True),
        ("train/cats/a.png", "train", "cats", False),
        ("train/cats/b.JPG", "train", "cats", False),
        ("train/cats/deep/c.JpEg", "train", "cats", False),
        ("train/dogs/d.PNG", "train", "dogs", False),
        ("train/dogs/loop", "train", "dogs", True),
        ("train/dogs/self.png", "train", "dogs", True),
    ]
    by_name = {rel(tree, i.origin): i for i in source}
    assert by_name["train/cats/a.png"].data == png(1)
    assert by_name["train/cats/b.JPG"].data == b"not really a jpeg"
    assert "symlink loop" in by_name["train/dogs/loop"].error
    assert "symlink loop" in by_name["train/dogs/self.png"].error
    assert "no such file" in by_name["test/cats/gone.png"].error
    assert by_name["test/cats/pipe.png"].error == "not a regular file"
    assert all(i.data is None for i in by_name.values() if i.error)


def test_limit_and_stable_order(tree: Path):
    first = [i.origin for i in resolve_source(str(tree))]
    assert [i.origin for i in resolve_source(str(tree), limit=3)] == first[:3]
    assert [i.origin for i in resolve_source(str(tree))] == first
    assert list(resolve_source(str(tree), limit=0)) == []


def test_flat_folders_give_no_split_or_label(tmp_path: Path):
    put(tmp_path / "x.png", png(1))
    put(tmp_path / "birds" / "y.gif", png(2))
    put(tmp_path / "train" / "z.bmp", png(3))
    items = list(resolve_source(str(tmp_path)))
    assert [(Path(i.origin).name, i.split, i.label) for i in items] == [
        ("y.gif", None, "birds"),
        ("z.bmp", "train", None),
        ("x.png", None, None),
    ]


def test_symlinked_folder_is_followed_unless_disabled(tmp_path: Path):
    other = tmp_path / "elsewhere"
    put(other / "h.png", png(8))
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(other, root / "horses")
    assert [(i.label, i.data) for i in resolve_source(str(root))] == [("horses", png(8))]
    assert list(resolve_source(str(root), follow_symlinks=False)) == []


UNREADABLE = """
import json, os, sys
from pathlib import Path
from genforge.data.sources.base import resolve_source
root = Path(sys.argv[1])
for d in ("cats", "dogs"):
    (root / d).mkdir()
(root / "cats" / "ok.png").write_bytes(b"ok")
(root / "cats" / "locked.png").write_bytes(b"locked")
(root / "dogs" / "z.png").write_bytes(b"z")
os.chmod(root / "cats" / "locked.png", 0)
os.chmod(root / "dogs", 0)
try:
    items = [[Path(i.origin).name, i.error, i.data and i.data.decode()] for i in resolve_source(str(root))]
finally:
    os.chmod(root / "dogs", 0o755)
print(json.dumps(items))
"""

# root reads a chmod-000 file anyway; without the DAC override capabilities it cannot, like a user
DROP_DAC = [
    "setpriv",
    "--bounding-set",
    "-dac_override,-dac_read_search",
    "--inh-caps",
    "-dac_override,-dac_read_search",
]


def test_unreadable_file_and_folder_are_error_items(tmp_path: Path):
    command = [sys.executable, "-c", UNREADABLE, str(tmp_path)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: chmod 000 does not stop root from reading")
        command = DROP_DAC + command
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if os.geteuid() == 0 and done.returncode != 0 and "setpriv" in done.stderr:
        pytest.skip(f"cannot drop root's file capabilities here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    items = {name: (error, data) for name, error, data in json.loads(done.stdout)}
    assert set(items) == {"locked.png", "ok.png", "dogs"}
    assert items["ok.png"] == (None, "ok")
    assert items["locked.png"] == ("cannot read file: permission denied", None)
    assert items["dogs"] == ("cannot list folder: permission denied", None)


def test_bad_spec_and_options(tmp_path: Path):
    with pytest.raises(DataError, match="not a directory"):
        FolderSource(tmp_path / "nope", None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="folder source options: unknown field.*colour"):
        resolve_source(str(tmp_path), colour="red")
    with pytest.raises(ConfigError, match="limit"):
        resolve_source(str(tmp_path), limit=-1)
