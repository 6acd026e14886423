"""itc.cache: cache entries and the one cached-build helper every built model goes through."""

from __future__ import annotations

import pytest

from itc.cache import BUILD_INFO, cache_entry, cached_build, fingerprint


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ITC_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_an_entry_is_keyed_by_the_fingerprint_of_its_parts(cache):
    assert cache_entry("toy/policy", ("spec", "source")) == cache / "toy" / f"policy-{fingerprint('spec', 'source')}"
    assert cache_entry("prm/toy-prm") == cache / "prm" / "toy-prm"


def test_a_build_runs_once_into_a_temporary_folder_then_is_renamed(cache):
    seen = []

    def build(tmp):
        seen.append(tmp)
        assert tmp.name == "thing-1.tmp" and not (cache / "thing-1").exists()
        (tmp / BUILD_INFO).write_text("{}")

    path = cache / "thing-1"
    assert cached_build(path, build, what="a thing") == path
    assert cached_build(path, build, what="a thing") == path
    assert len(seen) == 1 and (path / BUILD_INFO).exists() and not seen[0].exists()
    assert (cache / "thing-1.lock").exists()


def test_a_failed_build_leaves_no_entry_and_the_next_starts_afresh_unless_resuming(cache):
    path = cache / "thing"

    def broken(tmp):
        (tmp / "half").write_text("x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cached_build(path, broken, what="a thing")
    assert not path.exists()
    found = []
    cached_build(path, lambda tmp: found.append(sorted(p.name for p in tmp.iterdir())) or (tmp / BUILD_INFO).touch(), what="a thing")
    assert found == [[]]  # an interrupted build's leftovers are gone
    with pytest.raises(RuntimeError):
        cached_build(cache / "other", broken, what="a thing", resume=True)
    cached_build(cache / "other", lambda tmp: found.append(sorted(p.name for p in tmp.iterdir())) or (tmp / BUILD_INFO).touch(), what="a thing", resume=True)
    assert found[-1] == ["half"]  # kept for the build to resume from


def test_a_stale_entry_is_replaced(cache):
    path = cache / "thing"
    path.mkdir()
    (path / "old").write_text("stale")
    cached_build(path, lambda tmp: (tmp / "new").write_text("fresh"), what="a thing", is_built=lambda p: (p / "new").exists())
    assert sorted(p.name for p in path.iterdir()) == ["new"]
