import importlib.resources

import pytest

from maskclip.data import splits
from maskclip.data.classes import display_names, load_class_names
from maskclip.data.splits import SPLITS, load_split, split_ids
from maskclip.vocab import Vocabulary

COUNTS = {"voc20": (15, 5), "coco_stuff171": (156, 15), "context60": (50, 10), "context59": (49, 10),
          "ade847": (572, 275)}


def _ade847_lines() -> list[str]:
    folder = importlib.resources.files("maskclip.assets").joinpath("class_names")
    return folder.joinpath("ade847.txt").read_text("utf-8").splitlines()


def test_every_split_is_listed_and_counted():
    assert set(SPLITS) == set(COUNTS)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_split_counts_disjoint_and_cover_the_class_list(name):
    seen, unseen = load_split(name)
    assert (len(seen), len(unseen)) == COUNTS[name]
    shown = display_names(load_class_names(name))
    assert set(seen).isdisjoint(unseen)
    assert sorted(seen + unseen, key=shown.index) == shown  # names exactly as the class list shows them
    seen_ids, unseen_ids = split_ids(name)
    assert [shown[i] for i in seen_ids] == seen and [shown[i] for i in unseen_ids] == unseen
    assert sorted(seen_ids + unseen_ids) == list(range(len(shown)))


def test_paper_unseen_classes():
    assert load_split("voc20")[1] == ["potted plant", "sheep", "sofa", "train", "tv monitor"]
    assert set(load_split("coco-stuff")[1]) == {  # the alias of the class list is accepted
        "frisbee", "skateboard", "cardboard", "carrot", "scissors", "suitcase", "giraffe", "cow", "road",
        "concrete wall", "tree", "grass", "river", "clouds", "playingfield"}
    # MaskCLIP's Context config: suppress_labels = [20, 34, 49, 15, 8, 25, 7, 55, 32, 1] on the 60 classes
    assert split_ids("context60")[1] == sorted([20, 34, 49, 15, 8, 25, 7, 55, 32, 1])
    assert "background" in load_split("context60")[0]
    assert split_ids("context59")[1] == [i - 1 for i in sorted([20, 34, 49, 15, 8, 25, 7, 55, 32, 1])]
    # MaskCLIP's COCO-Stuff config: suppress_labels
    assert split_ids("coco_stuff171")[1] == [19, 23, 28, 29, 36, 51, 76, 88, 94, 112, 133, 136, 137, 157, 160]


def test_ade847_list_matches_the_mask2former_source():
    lines = _ade847_lines()
    assert len(lines) == 847 and all(ln.strip() == ln and ln for ln in lines)
    assert lines[0] == "wall"  # trainId 0, ADE id 2978
    assert lines[11] == "person, individual, someone, somebody, mortal, soul"  # trainId 11
    assert lines[150] == "blanket, cover"  # trainId 150: the first id beyond ADE-150's range
    assert lines[846] == "adding machine, totalizer, totaliser"  # trainId 846, ADE id 3148
    classes = load_class_names("ade20k-full")
    assert len(classes) == 847 and classes[11] == ["person", "individual", "someone", "somebody", "mortal", "soul"]
    Vocabulary.of(classes, allow_shared=True)  # usable as an evaluation vocabulary


def test_ade847_shared_first_names_are_shown_by_an_own_synonym():
    classes = load_class_names("ade847")
    shown = display_names(classes)
    assert len(set(shown)) == 847
    assert (shown[114], shown[191], shown[252]) == ("bag", "traveling bag", "handbag")
    assert (shown[130], shown[188]) == ("flowerpot", "pot")
    assert shown[768] == "control board"  # "instrument panel" leads class 198
    for line, names in zip(_ade847_lines(), classes):
        assert sorted(n.strip() for n in line.split(",")) == sorted(names)  # the same names, reordered at most


def test_ade847_frequency_split_spot_checks():
    seen, unseen = split_ids("ade847")
    # ZegFormer: catwalk (trainId 166, 10 images) rare; runway (52, 90 images) common; tongs 798 rare; pepper 797
    assert 166 in unseen and 798 in unseen and 846 in unseen
    assert 52 in seen and 797 in seen and 0 in seen
    assert split_ids("ade847")[1][:5] == [166, 176, 193, 208, 264]


def test_bad_split_lines_are_named(monkeypatch):
    monkeypatch.setattr(splits, "_unseen_lines", lambda key, name: ["sofa", "sofaa"])
    with pytest.raises(ValueError, match="'sofaa' is not a class of voc20"):
        load_split("voc20")
    monkeypatch.setattr(splits, "_unseen_lines", lambda key, name: ["sofa", "Sofa"])
    with pytest.raises(ValueError, match="listed twice"):
        load_split("voc20")


def test_unknown_split_names_choices():
    with pytest.raises(ValueError, match="ade847"):
        load_split("ade150")


def test_eval_unseen_takes_a_split_name_and_prefers_shown_names():
    from types import SimpleNamespace

    from maskclip.commands.eval import _unseen_ids
    from maskclip.data.classes import display_names, load_class_names
    from maskclip.errors import SettingsError

    classes = load_class_names("ade847")
    ds = SimpleNamespace(name="ade847", classes=classes, class_names=display_names(classes))
    assert _unseen_ids("ade847", ds) == split_ids("ade847")[1]
    # a name shown for one class and a synonym of another picks the class that shows it
    for i in range(len(classes)):
        assert _unseen_ids(ds.class_names[i], ds) == [i]
    voc = SimpleNamespace(name="voc20", classes=load_class_names("voc20"),
                          class_names=display_names(load_class_names("voc20")))
    with pytest.raises(SettingsError, match="another class list"):
        _unseen_ids("ade847", voc)


def test_train_proposals_takes_a_split_name_for_unseen():
    from maskclip.commands.common import unseen_names
    from maskclip.plus.api import parse_unseen

    names = unseen_names("coco_stuff171")
    assert len(names) == 15 and unseen_names("cat, dog") == ("cat", "dog")
    shown = display_names(load_class_names("coco_stuff171"))
    assert sorted(parse_unseen(names, shown)) == split_ids("coco_stuff171")[1]
