import pytest

from maskclip.data.classes import CLASS_LISTS, display_names, load_class_names, parse_class_arg

EXPECTED_SIZES = {
    "voc20": 20, "voc21": 21, "context59": 59, "context60": 60, "context459": 459,
    "coco_stuff171": 171, "coco_object": 81, "ade150": 150, "ade847": 847, "cityscapes19": 19, "camvid11": 11,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_SIZES))
def test_packaged_lists_have_official_sizes_and_unique_display_names(name):
    classes = load_class_names(name)
    assert len(classes) == EXPECTED_SIZES[name]
    names = display_names(classes)
    assert len(set(names)) == len(names)
    assert all(n and n == n.strip() for c in classes for n in c)


def test_all_advertised_lists_load():
    assert set(CLASS_LISTS) == set(EXPECTED_SIZES)


def test_background_lists_keep_stuff_words_under_display_name_background():
    voc21 = load_class_names("voc21")
    assert voc21[0][0] == "background"
    assert "sky" in voc21[0] and "building" in voc21[0] and len(voc21[0]) > 10
    assert voc21[1] == ["aeroplane"]
    coco = load_class_names("coco_object_expanded")  # file name accepted as alias
    assert coco[0][0] == "background" and "wall" in coco[0]
    assert coco[1][0] == "person" and "person in shirt" in coco[1]
    assert coco[17][0] == "dog"  # COCO category id 18 is the 17th category -> label 17
    ctx60 = load_class_names("context60")
    assert ctx60[0] == ["background"] and ctx60[1] == ["aeroplane"]


def test_plain_lists_and_camvid_names():
    assert load_class_names("voc20")[0] == ["airplane"]
    assert display_names(load_class_names("cityscapes19"))[:3] == ["road", "sidewalk", "building"]
    assert display_names(load_class_names("camvid")) == [
        "sky", "building", "pole", "road", "pavement", "tree", "sign symbol",
        "fence", "car", "pedestrian", "bicyclist",
    ]


def test_unknown_list_names_choices():
    with pytest.raises(ValueError, match="voc20"):
        load_class_names("voc19")


def test_parse_inline_list():
    assert parse_class_arg("cat, dog ,red car") == [["cat"], ["dog"], ["red car"]]


def test_parse_file_with_synonyms_and_comments(tmp_path):
    f = tmp_path / "classes.txt"
    f.write_text("# my classes\nperson, man, woman\n\ncar\n")
    assert parse_class_arg(str(f)) == [["person", "man", "woman"], ["car"]]
    assert parse_class_arg(f) == [["person", "man", "woman"], ["car"]]


@pytest.mark.parametrize("text", ["", " , ,"])
def test_parse_rejects_empty(text):
    with pytest.raises(ValueError, match="empty"):
        parse_class_arg(text)


def test_parse_rejects_empty_file(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("\n# nothing\n")
    with pytest.raises(ValueError, match="empty"):
        parse_class_arg(str(f))


def test_parse_duplicate_is_named():
    with pytest.raises(ValueError, match="'Dog'"):
        parse_class_arg("cat,dog,Dog")


def test_parse_duplicate_synonym_across_lines_is_named(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("person, man\ncar\nman\n")
    with pytest.raises(ValueError, match=r"'man'.*classes 1 and 3"):
        parse_class_arg(str(f))


def test_parse_missing_file_path_is_reported():
    with pytest.raises(ValueError, match="does not exist"):
        parse_class_arg("/nonexistent/classes.txt")


def test_command_line_lists_take_the_aliases_too():
    from maskclip.vocab import is_packaged_list, parse_classes

    for alias, n in (("coco_object_expanded", 81), ("ADE20K", 150), ("coco-stuff", 171), ("a847", 847)):
        assert len(parse_classes(alias)) == n and is_packaged_list(alias)
