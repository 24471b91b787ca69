import pyarrow as pa
import pyarrow.parquet  # noqa: F401
import pytest

from naics_pipeline.storage import atomic_path, clean_stale_temporaries, write_parquet


def test_failed_write_keeps_old_file(tmp_path):
    target = tmp_path / "t.parquet"
    write_parquet(pa.table({"x": [1]}), target)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert pa.parquet.read_table(target).column("x").to_pylist() == [1]
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".lock-")] == ["t.parquet"]


def test_folder_replace_and_stale_cleanup(tmp_path):
    target = tmp_path / "folder"
    for content in (b"old", b"new"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "f").write_bytes(content)
    assert (target / "f").read_bytes() == b"new"
    (tmp_path / ".tmp-x.123").mkdir()
    assert clean_stale_temporaries(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".lock-")) == ["folder"]


def test_concurrent_writer_gets_a_clear_error(tmp_path):
    from naics_pipeline.storage import StorageBusyError

    target = tmp_path / "t.parquet"
    with atomic_path(target) as tmp:
        with pytest.raises(StorageBusyError, match="t.parquet is being written by another run"):
            with atomic_path(target):
                pass
        tmp.write_bytes(b"x")
        # the live writer's temporary is not swept away by a concurrent clean-up
        assert clean_stale_temporaries(tmp_path) == 0
    assert target.read_bytes() == b"x"
