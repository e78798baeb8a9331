"""TFLite Model Metadata on the device: `edge-switcher info` shows it where the `flatbuffers`
package is installed and says in one line that it cannot where it is not (a tflite-runtime
install: requirements-edge.txt adds no package for it). The fixture files predate the metadata;
tests/test_metadata.py reads files that carry it."""
import importlib.util
import sys

import pytest

from edge_runtime import tflite_metadata as tm
from edge_runtime.cli import main

HAVE_FLATBUFFERS = importlib.util.find_spec("flatbuffers") is not None


def _without_flatbuffers(monkeypatch):
    monkeypatch.setitem(sys.modules, "flatbuffers", None)


def test_info_says_it_cannot_read_metadata_without_flatbuffers(portfolio, capsys, monkeypatch):
    _without_flatbuffers(monkeypatch)
    with pytest.raises(tm.MetadataUnavailable, match="pip install flatbuffers"):
        tm.read_metadata((portfolio / "variants" / "L00-dense-fp32.tflite").read_bytes())
    assert main(["info", str(portfolio)]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("metadata"))
    assert line == ("metadata   cannot read TFLite Model Metadata here: the `flatbuffers` "
                    "package is not installed (pip install flatbuffers)")


@pytest.mark.skipif(not HAVE_FLATBUFFERS, reason="needs the flatbuffers package")
def test_info_says_a_file_has_no_metadata(portfolio, capsys):
    assert tm.read_metadata((portfolio / "variants" / "L00-dense-fp32.tflite").read_bytes()) \
        is None
    assert main(["info", "--metadata", str(portfolio)]) == 0
    out = capsys.readouterr().out
    assert "metadata   L04-pruned-int8: no TFLite Model Metadata" in out


@pytest.mark.skipif(not HAVE_FLATBUFFERS, reason="needs the flatbuffers package")
def test_garbage_is_a_metadata_error_not_a_crash():
    with pytest.raises(tm.MetadataError):
        tm.read_metadata(b"\xff\xff\xff\x7f" + bytes(60))
    assert tm.packed_files(b"not a zip") == {}

