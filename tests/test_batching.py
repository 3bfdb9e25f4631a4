"""BatchPlanner: size-balanced batches, a cap on files, big files alone, a busy tail."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from snakebatch.engine.batching import (
    LOOKAHEAD_FILES,
    MAX_FILES_PER_BATCH,
    TAIL_MIN_SHARE,
    BatchPlanner,
    CommittedIndex,
)
from snakebatch.engine.discovery import SourceFile


def _files(sizes):
    return [SourceFile(f"f{i}.py", size, i) for i, size in enumerate(sizes)]


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(0, 5_000_000), max_size=300), target=st.integers(1, 4_000_000),
       workers=st.integers(1, 8), max_files=st.integers(1, 50))
def test_every_file_exactly_once_and_batches_respect_the_target(sizes, target, workers, max_files):
    planner = BatchPlanner(_files(sizes), workers=workers)
    seen, ids = [], set()
    while (batch := planner.next_batch(target, max_files)) is not None:
        assert batch.files, "no empty batches"
        assert len(batch.files) <= max_files
        # Over the target only when a single file is larger than it on its own.
        assert batch.bytes <= target or len(batch.files) == 1 or batch.bytes - batch.files[-1].size < target
        assert batch.batch_id not in ids
        ids.add(batch.batch_id)
        seen.extend(f.path for f in batch.files)
    assert seen == [f"f{i}.py" for i in range(len(sizes))]  # in order, none lost, none twice
    assert planner.discovery_done


def test_a_file_larger_than_the_target_goes_alone():
    planner = BatchPlanner(_files([10, 10, 5_000, 10, 10] + [10] * 100), workers=1)
    batches = []
    while (batch := planner.next_batch(1_000)) is not None:
        batches.append([f.size for f in batch.files])
    assert [5_000] in batches


def test_the_tail_is_spread_over_the_workers():
    # 40 files of 100 KB with a 4 MB target would be one batch; with 4 workers the tail is cut
    # so that every worker gets work.
    planner = BatchPlanner(_files([100_000] * 40), workers=4)
    batches = []
    while (batch := planner.next_batch(4_000_000)) is not None:
        batches.append(len(batch.files))
    assert len(batches) >= 4
    assert sum(batches) == 40


def test_discovery_is_read_ahead_only_a_bounded_number_of_files():
    pulled = 0

    def endless():
        nonlocal pulled
        i = 0
        while True:
            pulled += 1
            yield SourceFile(f"f{i}", 1, 0)
            i += 1

    planner = BatchPlanner(endless(), workers=2)
    batch = planner.next_batch(100)
    assert batch is not None and len(batch.files) == 100
    assert pulled <= LOOKAHEAD_FILES + 1
    assert not planner.discovery_done


def test_committed_files_are_skipped_and_stale_ones_counted():
    committed = CommittedIndex(only_source="src")
    committed.add("src", ["f0.py", "f1.py"], [10, 99], [0, 1])  # f1 changed size since it was committed
    planner = BatchPlanner(_files([10, 10, 10]), workers=1, committed=committed)
    batch = planner.next_batch(1_000)
    assert [f.path for f in batch.files] == ["f2.py"]
    assert committed.seen == 2 and committed.stale_count == 1 and committed.stale == ["f1.py"]


@settings(max_examples=100, deadline=None)
@given(groups=st.lists(st.tuples(st.integers(1, 30), st.integers(0, 3000)), max_size=60),
       target=st.integers(1, 20_000), workers=st.integers(1, 4), max_files=st.integers(1, 10))
def test_the_paths_of_one_git_blob_go_in_one_batch(groups, target, workers, max_files):
    files = [SourceFile(f"g{g}/p{i}.py", size, None, f"blob{g}")
             for g, (count, size) in enumerate(groups) for i in range(count)]
    planner = BatchPlanner(files, workers=workers)
    seen, batch_of = [], {}
    while (batch := planner.next_batch(target, max_files)) is not None:
        for f in batch.files:
            assert batch_of.setdefault(f.blob_id, batch.batch_id) == batch.batch_id, "a blob's paths split"
        seen.extend(batch.files)
    assert seen == files


def test_a_blob_at_more_paths_than_the_cap_is_split_at_the_cap():
    files = [SourceFile(f"p{i}.py", 0, None, "e69de29") for i in range(2500)]
    planner = BatchPlanner(files, workers=2)
    sizes = []
    while (batch := planner.next_batch(1_000_000)) is not None:
        sizes.append(len(batch.files))
    assert sum(sizes) == 2500 and max(sizes) == MAX_FILES_PER_BATCH


def test_the_tail_is_never_cut_into_batches_of_a_few_small_files():
    # 20,000 files of 400 bytes left for 32 workers: shares shrink as the tail drains, but a batch
    # keeps at least 1 / (TAIL_MIN_SHARE x 32) of them (each batch has a fixed cost); before, the
    # last ~4,000 files went out as ~1,000 batches of 1-4 files.
    planner = BatchPlanner(_files([400] * 20_000), workers=32)
    sizes = []
    while (batch := planner.next_batch(4_000_000)) is not None:
        sizes.append(len(batch.files))
    assert sum(sizes) == 20_000
    # The first batch is a full one (20,000 is the read-ahead: discovery had not ended), so the
    # tail is the other 19,000.
    assert sizes[0] == 1000
    assert min(sizes[:-1]) >= 19_000 // (TAIL_MIN_SHARE * 32)
    assert len(sizes) < 6 * 32


def test_a_batch_is_of_one_source_and_resume_knows_files_by_source_and_path():
    files = [SourceFile(f"f{i}.py", 10, 0, None, source) for source in ("a", "b", "c") for i in range(3)]
    files += [SourceFile("g.py", 10, None, "blob", "c"), SourceFile("g.py", 10, None, "blob", "d")]
    committed = CommittedIndex()
    committed.add("b", ["f0.py"], [10], [0])  # b's f0.py, not a's or c's
    planner = BatchPlanner(files, workers=1, committed=committed)
    batches = []
    while (batch := planner.next_batch(1_000_000)) is not None:
        batches.append([(f.source, f.path) for f in batch.files])
    assert all(len({source for source, _ in batch}) == 1 for batch in batches)
    assert sorted(f for batch in batches for f in batch) == sorted(
        (f.source, f.path) for f in files if (f.source, f.path) != ("b", "f0.py"))
    assert committed.seen == 1
