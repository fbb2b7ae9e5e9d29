"""peftlab.files: files and folders replaced whole or not at all."""

import pytest

from peftlab.files import swap_folder, write_atomic, write_bytes_atomic, write_files_atomic


def fail_halfway(temporary) -> None:
    temporary.write_bytes(b"half")
    raise OSError("disk full")


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.csv"
    target.write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, fail_halfway)
    assert target.read_bytes() == b"old"
    assert [path.name for path in tmp_path.iterdir()] == ["metrics.csv"]
    write_atomic(target, lambda temporary: temporary.write_bytes(b"new"))
    assert target.read_bytes() == b"new"
    assert [path.name for path in tmp_path.iterdir()] == ["metrics.csv"]


def test_several_files_are_all_replaced_or_none_is(tmp_path):
    first, second = tmp_path / "report.txt", tmp_path / "report.json"
    first.write_bytes(b"old report")
    with pytest.raises(OSError, match="disk full"):
        # The second file fails: the first must not be replaced either.
        write_files_atomic(
            {first: lambda temporary: temporary.write_bytes(b"new report"), second: fail_halfway}
        )
    assert first.read_bytes() == b"old report"
    assert [path.name for path in tmp_path.iterdir()] == ["report.txt"]
    write_bytes_atomic({first: b"new report", second: b"{}"})
    assert (first.read_bytes(), second.read_bytes()) == (b"new report", b"{}")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report.json", "report.txt"]


def test_swap_folder_replaces_the_whole_folder(tmp_path):
    output, staging = tmp_path / "dataset", tmp_path / ".dataset-staging"
    output.mkdir()
    (output / "stale.png").write_bytes(b"old")
    staging.mkdir()
    (staging / "train.txt").write_text("a.png\tcaption\n", encoding="utf-8")
    swap_folder(staging, output)
    assert [path.name for path in output.iterdir()] == ["train.txt"]
    assert [path.name for path in tmp_path.iterdir()] == ["dataset"]  # no staging or old folder left
