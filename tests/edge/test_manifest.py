"""Manifest schema: validation errors name the file and key; atomic writes; file verification."""
import copy
import json
import os

import pytest

from edge_runtime.manifest import (KINDS, PRECISIONS, SCHEMA_VERSION, Manifest, ManifestError,
                                   VariantFileError, file_entry, load_manifest, new_manifest,
                                   sha256_file, validate, verify_variant_file, write_manifest)


def test_fixture_manifest_loads_into_dataclasses(portfolio):
    m = load_manifest(portfolio)
    assert isinstance(m, Manifest) and m.schema_version == SCHEMA_VERSION == 1
    assert m.task.input_shape == (28, 28, 1) and m.task.num_classes == 10
    assert m.task.normalization.mean == (0.1307,)
    assert m.ids == ["L00-dense-fp32", "L02-pruned-fp32", "L04-pruned-fp32", "L04-pruned-int8"]
    int8 = m.variant("L04-pruned-int8")
    assert int8.precision == "int8" and int8.parent == "L04-pruned-fp32"
    assert int8.latency_ms == {"1": 0.55, "2": 0.40}
    # loading the manifest file itself works too
    assert load_manifest(portfolio / "manifest.json").ids == m.ids
    with pytest.raises(KeyError, match="L00-dense-fp32"):
        m.variant("nope")


def test_round_trip_through_to_dict(manifest_doc, tmp_portfolio):
    m = load_manifest(tmp_portfolio)
    doc = m.to_dict()
    assert doc["variants"] == manifest_doc["variants"]
    assert doc["task"] == manifest_doc["task"]
    write_manifest(tmp_portfolio, m)
    assert load_manifest(tmp_portfolio) == m


def _broken(doc, path, value=KeyError):
    """Copy of ``doc`` with the key at ``path`` (list of keys/indexes) set to value or deleted."""
    doc = copy.deepcopy(doc)
    obj = doc
    for k in path[:-1]:
        obj = obj[k]
    if value is KeyError:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value
    return doc


@pytest.mark.parametrize("path,value,pattern", [
    (["schema_version"], 2, r"schema_version: unknown schema_version 2"),
    (["schema_version"], KeyError, r"schema_version: missing required key"),
    (["schema_version"], "1", r"schema_version: expected an integer"),
    (["task"], KeyError, r"task: missing required key"),
    (["task", "input_shape"], KeyError, r"task\.input_shape: missing required key"),
    (["task", "input_shape"], [28, "28", 1], r"task\.input_shape: expected a non-empty list"),
    (["task", "input_dtype"], "float128", r"task\.input_dtype: unknown dtype 'float128'"),
    (["task", "num_classes"], True, r"task\.num_classes: expected a positive integer"),
    (["task", "labels"], ["a", "b"], r"task\.labels: 2 labels but num_classes is 10"),
    (["task", "normalization", "mean"], [0.1, 0.2], r"normalization\.mean: has 2 values"),
    (["task", "normalization", "std"], [0], r"normalization\.std: contains 0"),
    (["variants"], [], r"variants: the portfolio has no variants"),
    (["variants", 1, "sha256"], KeyError,
     r"variants\[1\]\(L02-pruned-fp32\)\.sha256: missing required key"),
    (["variants", 1, "sha256"], "abc", r"variants\[1\]\(L02-pruned-fp32\)\.sha256: expected 64"),
    (["variants", 0, "kind"], "distilled", r"variants\[0\]\(L00-dense-fp32\)\.kind: unknown kind"),
    (["variants", 3, "precision"], "int4",
     r"variants\[3\]\(L04-pruned-int8\)\.precision: unknown precision 'int4'"),
    (["variants", 0, "bytes"], 1.5, r"\.bytes: expected a non-negative integer"),
    (["variants", 0, "density"], 1.2, r"\.density: expected a number in \[0, 1\]"),
    (["variants", 0, "accuracy"], "high", r"\.accuracy: expected a number in \[0, 1\] or null"),
    (["variants", 0, "latency_ms"], {"one": 1.0}, r"\.latency_ms\['one'\]: expected a key"),
    (["variants", 0, "latency_ms"], {"1": -1}, r"\.latency_ms\['1'\]: expected a non-negative"),
    (["variants", 0, "file"], "../../etc/passwd", r"\.file: '../../etc/passwd' must be relative"),
    (["variants", 0, "file"], "/abs/x.tflite", r"\.file: '/abs/x.tflite' must be relative"),
    (["variants", 0, "edgetpu"], "yes", r"\.edgetpu: expected true or false"),
    (["variants", 0, "id"], "has space", r"variants\[0\]\.id: expected a string of letters"),
])
def test_validate_names_source_and_key(manifest_doc, path, value, pattern):
    bad = _broken(manifest_doc, path, value)
    with pytest.raises(ManifestError, match=r"^/some/portfolio/manifest\.json: " + ".*" + pattern):
        validate(bad, "/some/portfolio/manifest.json")


def test_duplicate_id_is_refused(manifest_doc):
    doc = copy.deepcopy(manifest_doc)
    doc["variants"][2]["id"] = doc["variants"][0]["id"]
    with pytest.raises(ManifestError, match=r"m\.json: variants\[2\]\.id: duplicate id "
                                            r"'L00-dense-fp32' \(also variants\[0\]\)"):
        validate(doc, "m.json")


def test_all_kinds_and_precisions_are_accepted(manifest_doc):
    for kind in KINDS:
        for prec in PRECISIONS:
            doc = copy.deepcopy(manifest_doc)
            doc["variants"][0].update(kind=kind, precision=prec)
            validate(doc, "m.json")


def test_unknown_keys_are_kept_for_forward_compatibility(manifest_doc, tmp_portfolio):
    doc = copy.deepcopy(manifest_doc)
    doc["future_top"] = 1
    doc["variants"][0]["future_field"] = {"x": 1}
    write_manifest(tmp_portfolio, doc)
    m = load_manifest(tmp_portfolio)
    assert m.variants[0].extra == {"future_field": {"x": 1}}
    assert m.to_dict()["future_top"] == 1


def test_load_manifest_errors_name_the_file(tmp_path):
    with pytest.raises(ManifestError, match=f"{tmp_path}/manifest.json: no such manifest"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match=r"manifest\.json: not valid JSON \(line 1"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(ManifestError, match=r"manifest\.json: schema_version: unknown "
                                            r"schema_version 99"):
        load_manifest(tmp_path)


def test_write_manifest_is_atomic_and_validates_first(manifest_doc, tmp_portfolio):
    target = tmp_portfolio / "manifest.json"
    before = target.read_bytes()
    bad = _broken(manifest_doc, ["variants", 0, "kind"], "weird")
    with pytest.raises(ManifestError, match="kind"):
        write_manifest(tmp_portfolio, bad)
    assert target.read_bytes() == before                      # untouched
    assert sorted(p.name for p in tmp_portfolio.iterdir()) == ["manifest.json", "variants"]

    doc = copy.deepcopy(manifest_doc)
    doc["generator"] = "test"
    inode = target.stat().st_ino
    write_manifest(tmp_portfolio, doc)
    assert json.loads(target.read_text())["generator"] == "test"
    assert target.stat().st_ino != inode                      # replaced by rename, not rewritten
    assert not [p for p in tmp_portfolio.iterdir() if p.name.endswith(".tmp")]


def test_write_manifest_refuses_a_manifest_out_of_step_with_its_files(manifest_doc,
                                                                     tmp_portfolio):
    doc = copy.deepcopy(manifest_doc)
    doc["variants"][1]["sha256"] = "0" * 64
    with pytest.raises(VariantFileError, match="L02-pruned-fp32.*does not match its sha256"):
        write_manifest(tmp_portfolio, doc)
    write_manifest(tmp_portfolio, doc, check_files=False)    # explicit opt-out still validates
    assert load_manifest(tmp_portfolio).variant("L02-pruned-fp32").sha256 == "0" * 64


def test_host_helpers_build_a_valid_manifest(tmp_path, portfolio):
    folder = tmp_path / "p"
    (folder / "variants").mkdir(parents=True)
    src = portfolio / "variants" / "L04-pruned-int8.tflite"
    (folder / "variants" / "a.tflite").write_bytes(src.read_bytes())
    entry = {"id": "a", **file_entry(folder, "variants/a.tflite"), "kind": "pruned",
             "precision": "int8", "level": 4, "density": 0.41, "params_total": 10,
             "params_nonzero": 4, "macs": 100, "accuracy": None, "latency_ms": {}}
    assert entry["sha256"] == sha256_file(src) and entry["bytes"] == src.stat().st_size
    task = {"name": "t", "input_shape": [28, 28, 1], "input_dtype": "float32", "num_classes": 10}
    path = write_manifest(folder, new_manifest(task, [entry], generator="shifter-tf 0.1.0"))
    m = load_manifest(path)
    assert m.generator == "shifter-tf 0.1.0" and m.created.endswith("Z")
    assert m.variants[0].accuracy is None and m.task.normalization is None


def test_verify_variant_file(tmp_portfolio):
    m = load_manifest(tmp_portfolio)
    v = m.variant("L02-pruned-fp32")
    path = tmp_portfolio / v.file
    assert verify_variant_file(tmp_portfolio, v) == path

    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(VariantFileError, match=rf"'L02-pruned-fp32': {path} is truncated: "
                                               rf"{len(data) - 10} bytes, the manifest says "
                                               rf"{len(data)}"):
        verify_variant_file(tmp_portfolio, v)

    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(VariantFileError, match=rf"{path} does not match its sha256"):
        verify_variant_file(tmp_portfolio, v)

    os.unlink(path)
    with pytest.raises(VariantFileError, match=rf"file {path} is missing"):
        verify_variant_file(tmp_portfolio, v)
    assert issubclass(VariantFileError, ManifestError) and issubclass(ManifestError, ValueError)
