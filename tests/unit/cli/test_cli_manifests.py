"""Which files `-f` reads, in which order, and under which names."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from mycelium.cli.errors import InputError
from mycelium.cli.manifests import STDIN_NAME, read_manifests


def test_a_directory_gives_its_manifests_in_name_order(tmp_path: Path) -> None:
    for name in ("b.yml", "a.yaml", "c.json", "README.md", "d.YAML"):
        (tmp_path / name).write_text(name)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.yaml").write_text("not read: directories are not recursed")

    files = read_manifests([str(tmp_path)], io.StringIO())

    assert [Path(f.name).name for f in files] == ["a.yaml", "b.yml", "c.json", "d.YAML"]
    assert [f.content for f in files] == ["a.yaml", "b.yml", "c.json", "d.YAML"]


def test_files_keep_the_order_and_the_spelling_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("z.yaml").write_text("z")
    Path("a.yaml").write_text("a")

    files = read_manifests(["z.yaml", "./a.yaml"], io.StringIO())

    assert [f.name for f in files] == ["z.yaml", "./a.yaml"]


def test_dash_reads_standard_input_once(tmp_path: Path) -> None:
    files = read_manifests(["-"], io.StringIO("kind: Service\n"))

    assert [(f.name, f.content) for f in files] == [(STDIN_NAME, "kind: Service\n")]
    with pytest.raises(InputError, match="standard input can be read only once"):
        read_manifests(["-", "-"], io.StringIO(""))


def test_a_file_that_is_not_text_is_refused(tmp_path: Path) -> None:
    binary = tmp_path / "image.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")

    with pytest.raises(InputError, match="is not UTF-8 text"):
        read_manifests([str(binary)], io.StringIO())
