"""Data roots: the browser reads server folders only under the roots the operator names (core.roots)."""

import os
from pathlib import Path

import pytest
from PIL import Image

from core import roots
from core.errors import InvalidInputError


def _dataset(folder: Path, classes=("cats", "dogs"), per_class: int = 2) -> Path:
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (40, 40), (30 * i, 90, 160)).save(folder / name / f"{i}.png")
    return folder


@pytest.fixture
def tree(tmp_path):
    """tmp/root/pets (a dataset), tmp/outside/secret (a dataset outside the root)."""
    root = tmp_path / "root"
    _dataset(root / "pets")
    _dataset(tmp_path / "outside" / "secret", classes=("a", "b"))
    return tmp_path, roots.Roots((root.resolve(),), "test")


def _refused(path, given) -> str:
    with pytest.raises(roots.OutsideRootsError) as caught:
        roots.resolve(path, given)
    return str(caught.value)


def test_inside_a_root_by_absolute_and_relative_path_and_with_a_trailing_slash(tree):
    tmp, given = tree
    real = (tmp / "root" / "pets").resolve()
    assert roots.resolve(real, given) == real
    assert roots.resolve("pets", given) == real
    assert roots.resolve("pets/", given) == real
    assert roots.resolve(f"{real}/", given) == real
    assert roots.resolve("./pets", given) == real
    assert roots.open_dataset("pets", given).classes == ("cats", "dogs")


def test_escapes_absolute_paths_symlinks_and_missing_paths_share_one_message(tree):
    tmp, given = tree
    outside = tmp / "outside" / "secret"
    (tmp / "root" / "link").symlink_to(outside, target_is_directory=True)
    (tmp / "root" / "pets" / "cats" / "leak.png").symlink_to(outside / "a" / "0.png")
    (tmp / "root" / "deep").mkdir()
    (tmp / "root" / "deep" / "hop").symlink_to(tmp / "root" / "pets", target_is_directory=True)  # back inside
    messages = {
        _refused("../outside/secret", given),
        _refused("pets/../../outside/secret", given),
        _refused(str(tmp / "root" / ".." / "outside" / "secret"), given),
        _refused(str(outside), given),
        _refused("/", given),
        _refused("/etc", given),
        _refused("link", given),  # a symlinked folder pointing out of the root
        _refused("link/a", given),  # ... and a path through it
        _refused("deep/hop", given),  # a symlink anywhere on the way, even one that points back inside
        _refused("pets/cats/leak.png", given),  # a symlinked file (and not a folder)
        _refused("does-not-exist", given),  # the same message: a refusal never says whether a path exists
        _refused(str(tmp / "root" / "nope"), given),
        _refused("", given),
        _refused("pets\0", given),
    }
    assert messages == {roots.REFUSED}
    assert "not one of the datasets" in roots.REFUSED and str(tmp) not in roots.REFUSED


def test_case_variants_of_the_root_are_not_the_root(tree):
    tmp, given = tree
    upper = str((tmp / "root" / "pets").resolve()).replace("/root/pets", "/ROOT/pets")
    _refused(upper, given)
    _refused("PETS", given)  # a case-sensitive filesystem: no such folder, same message


def test_a_root_that_is_itself_a_symlink_is_its_target(tmp_path):
    target = _dataset(tmp_path / "real" / "pets").parent
    (tmp_path / "alias").symlink_to(target, target_is_directory=True)
    given = roots.configured({roots.ENV: str(tmp_path / "alias")})
    assert given.paths == (target.resolve(),) and not given.problems
    assert roots.resolve("pets", given) == (target / "pets").resolve()
    # the path under the alias is lexically outside the resolved root: refused, the listing offers the real one
    _refused(str(tmp_path / "alias" / "pets"), given)
    assert [f.path for f in roots.list_datasets(given).folders] == [(target / "pets").resolve()]


def test_roots_from_the_environment_the_config_file_and_the_default(tmp_path, monkeypatch):
    a, b = _dataset(tmp_path / "a" / "x").parent, _dataset(tmp_path / "b" / "y").parent
    from_env = roots.configured({roots.ENV: f"{a}{os.pathsep}{b}{os.pathsep}"})
    assert from_env.paths == (a.resolve(), b.resolve()) and from_env.source == roots.ENV

    config = tmp_path / "visionlens.toml"
    config.write_text(f'[visionlens]\ndata_roots = ["{a}", "b"]\n')  # relative entries: beside the file
    from_file = roots.configured({roots.CONFIG_ENV: str(config)})
    assert from_file.paths == (a.resolve(), b.resolve()) and from_file.source == str(config)

    default = tmp_path / "project-data"
    monkeypatch.setattr(roots, "DEFAULT_ROOT", default)
    monkeypatch.setattr(roots, "CONFIG_FILES", ())
    assert not default.exists()
    assert roots.configured({}).paths == (default.resolve(),) and default.is_dir()  # created on first use


def test_too_wide_missing_and_broken_roots_are_refused_and_reported(tmp_path):
    given = roots.configured({roots.ENV: f"/{os.pathsep}{Path.home()}{os.pathsep}{tmp_path / 'missing'}"})
    assert given.paths == ()
    assert len(given.problems) == 3 and "whole machine" in given.problems[0] and "not a folder" in given.problems[2]
    bad = tmp_path / "bad.toml"
    bad.write_text("[visionlens\n")
    assert roots.configured({roots.CONFIG_ENV: str(bad)}).paths == ()
    bad.write_text("[visionlens]\ndata_roots = 3\n")
    assert "must be a list" in roots.configured({roots.CONFIG_ENV: str(bad)}).problems[0]
    with pytest.raises(InvalidInputError):
        roots.resolve("anything", given)


def test_listing_finds_class_folder_datasets_with_counts_and_skips_links_and_debris(tmp_path):
    root = tmp_path / "root"
    _dataset(root / "pets", per_class=3)
    _dataset(root / "export" / "digits", classes=("0", "1", "2"))
    (root / "pets" / "README.txt").write_text("about")
    (root / "__MACOSX" / "pets" / "x").mkdir(parents=True)
    _dataset(root / ".hidden")
    _dataset(tmp_path / "outside")
    (root / "linked").symlink_to(tmp_path / "outside", target_is_directory=True)
    (root / "one-class" / "only").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(root / "one-class" / "only" / "a.png")
    listing = roots.list_datasets(roots.Roots((root.resolve(),), "test"))
    assert [(f.name, f.images, f.classes) for f in listing.folders] == [("root/export/digits", 6, 3), ("root/pets", 6, 2)]
    assert not listing.problems
    assert all(roots.resolve(f.path, roots.Roots((root.resolve(),), "t")) == f.path for f in listing.folders)
    assert listing.folders[1].label() == "root/pets · 6 images, 2 classes"


def test_listing_a_root_that_is_too_big_stops_with_a_message(tmp_path):
    root = tmp_path / "big"
    _dataset(root / "pets", per_class=30)
    listing = roots.list_datasets(roots.Roots((root.resolve(),), "test"), max_files=10)
    assert len(listing.problems) == 1 and "too big to list" in listing.problems[0] and "10 files" in listing.problems[0]
    slow = roots.list_datasets(roots.Roots((root.resolve(),), "test"), max_seconds=0.0)
    assert "s to list" in slow.problems[0]
