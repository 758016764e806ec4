"""The image-set format and the content-addressed store: reuse, atomic builds, sealed entries, locks."""

import numpy as np
import pandas as pd
import pytest

from ausynth.tasks import imageset
from ausynth.tasks.imageset import ImageSet
from ausynth.tasks.store import cached_folder, damage, locked, stable_hash


def make(n=4):
    frame = pd.DataFrame({"subject": list("abcd")[:n], "origin": "labelled", "AU1": [1.0, 0.0, np.nan, 1.0][:n]})
    return ImageSet(np.arange(n * 8 * 8, dtype=np.uint8).reshape(n, 8, 8, 1), frame, ["AU1"], {"dataset": "t"})


def test_save_load_round_trip(tmp_path):
    saved = imageset.save(make(), tmp_path / "set")
    loaded = imageset.load(saved, mmap=True)
    np.testing.assert_array_equal(loaded.images, make().images)
    assert loaded.label_columns == ["AU1"] and loaded.meta == {"dataset": "t"}
    np.testing.assert_array_equal(loaded.labels, make().labels)


def test_contract_violations_are_refused():
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(np.zeros((4, 8, 8, 1), np.float32), make().frame, ["AU1"])
    with pytest.raises(ValueError, match="3 images but 4"):
        ImageSet(np.zeros((3, 8, 8, 1), np.uint8), make().frame, ["AU1"])
    with pytest.raises(ValueError, match="AU2"):
        ImageSet(make().images, make().frame, ["AU2"])


def test_concat_and_relabel():
    both = imageset.concat([make(), make(2).with_labels(np.array([[0.3], [0.9]]), "pseudo")])
    assert len(both) == 6 and list(both.frame["origin"][-2:]) == ["pseudo", "pseudo"]
    np.testing.assert_allclose(both.labels[-2:, 0], [0.3, 0.9])


def test_cached_folder_reuses_and_a_failed_build_leaves_nothing(tmp_path):
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "x").write_text("1")

    first = cached_folder(tmp_path, "kind", "k1", build)
    again = cached_folder(tmp_path, "kind", "k1", build)
    assert first == again and len(calls) == 1

    def crash(folder):
        (folder / "half").write_text("written")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cached_folder(tmp_path, "kind", "k2", crash)
    assert sorted(p.name for p in (tmp_path / "kind").iterdir()) == ["k1"]  # no half-built k2, no temporary folder


def test_stable_hash_depends_on_values_not_identity():
    from ausynth.configs.schema import ClassifierConfig

    assert stable_hash(ClassifierConfig()) == stable_hash(ClassifierConfig())
    assert stable_hash(ClassifierConfig()) != stable_hash(ClassifierConfig(lr=0.01))


def test_a_finished_entry_is_sealed_with_its_files_and_sizes(tmp_path):
    import json

    def build(folder):
        (folder / "a.npy").write_bytes(b"12345")
        (folder / "sub").mkdir()
        (folder / "sub" / "b.txt").write_text("xy")

    entry = cached_folder(tmp_path, "kind", "k", build)
    assert json.loads((entry / ".entry.json").read_text()) == {"a.npy": 5, "sub/b.txt": 2}
    assert damage(entry) is None


@pytest.mark.parametrize("harm, reason", [
    (lambda entry: (entry / "a.npy").unlink(), "a.npy is missing"),
    (lambda entry: (entry / "a.npy").write_bytes(b"12"), "a.npy has 2 bytes where 5 were written"),
    (lambda entry: (entry / ".entry.json").unlink(), "its file list .entry.json is missing or unreadable"),
])
def test_a_damaged_entry_is_moved_aside_with_a_warning_and_built_again(tmp_path, caplog, harm, reason):
    import logging

    builds = []

    def build(folder):
        builds.append(folder)
        (folder / "a.npy").write_bytes(b"12345")

    entry = cached_folder(tmp_path, "kind", "k", build)
    harm(entry)
    with caplog.at_level(logging.WARNING, logger="ausynth"):
        again = cached_folder(tmp_path, "kind", "k", build)
    assert again == entry and len(builds) == 2 and (entry / "a.npy").read_bytes() == b"12345"
    (aside,) = (tmp_path / "kind").glob(".k.damaged-*")
    assert f"store entry {entry} is damaged ({reason})" in caplog.text and str(aside) in caplog.text
    assert damage(entry) is None
    assert cached_folder(tmp_path, "kind", "k", build) == entry and len(builds) == 2  # whole again: reused


def test_locked_lets_one_holder_in_at_a_time(tmp_path):
    import threading
    import time

    inside, overlaps = [], []

    def work(name):
        with locked(tmp_path / "entry"):
            if inside:
                overlaps.append(name)
            inside.append(name)
            time.sleep(0.2)
            inside.remove(name)

    threads = [threading.Thread(target=work, args=(n,)) for n in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not overlaps
    assert (tmp_path / ".entry.lock").exists() and not (tmp_path / "entry").exists()
