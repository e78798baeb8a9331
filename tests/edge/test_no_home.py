"""The switcher starts with no HOME and a user id that has no passwd entry (a systemd service
with a dynamic user, a minimal container, a fresh device userland): the file-check verdicts go to
a private temp folder, or stay in memory, with a one-line warning; nothing raises."""
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import PORTFOLIO, TIME_SCALE, child_env

# Imports everything while the files are readable, then loses its home: with "unknown-uid"
# (root only) by becoming a user id that has no passwd entry, with "fake-passwd" by making the
# passwd lookup fail for its own id. Then starts a switcher and serves one example.
CHILD = r"""
import json, os, sys
from pathlib import Path
import numpy as np
from edge_runtime.interpreter import get_backend
from edge_runtime.monitor import StaticMonitor
from edge_runtime.switcher import EdgeSwitcher
get_backend()
mode, folder = sys.argv[1], sys.argv[2]
if mode == "unknown-uid":
    uid = int(sys.argv[3])
    os.setgroups([]); os.setgid(uid); os.setuid(uid)
else:
    import pwd
    def getpwuid(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")
    pwd.getpwuid = getpwuid
try:
    Path.home()
    home = True
except (RuntimeError, KeyError):
    home = False
sw = EdgeSwitcher.from_portfolio(folder, num_threads=1, use_profile=False,
                                 monitor=StaticMonitor(cpu_busy_other=0.0, cpu_count_=1))
y, vid = sw.predict(np.zeros((1, 28, 28, 1), np.float32), return_variant=True)
print(json.dumps({"home": home, "uid": os.getuid(), "shape": list(y.shape), "variant": vid,
                  "probe": sw.stats()["probe"],
                  "can_spawn": os.access(sys.executable, os.X_OK)}))
"""


def _unused_uid() -> int:
    for uid in range(54321, 60000):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    raise AssertionError("no unused uid")


@pytest.fixture
def shared_tmp():
    """A folder the unknown user can reach (pytest's tmp_path is private to its user)."""
    d = Path(tempfile.mkdtemp(prefix="edge-nohome-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _run(mode: str, shared_tmp: Path, uid: int, tmpdir: Path):
    folder = shared_tmp / "portfolio"
    shutil.copytree(PORTFOLIO, folder)
    for p in [folder, *folder.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    env = child_env(TMPDIR=str(tmpdir))          # no HOME, XDG_CACHE_HOME, EDGE_RUNTIME_CACHE
    res = subprocess.run([sys.executable, "-c", CHILD, mode, str(folder), str(uid)],
                         capture_output=True, text=True, timeout=120 * TIME_SCALE, env=env, cwd="/")
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1]), res.stderr


@pytest.mark.parametrize("mode", ["fake-passwd", "unknown-uid"])
def test_the_switcher_starts_without_a_home(mode, shared_tmp):
    if mode == "unknown-uid" and os.geteuid() != 0:
        pytest.skip("becoming a user id with no passwd entry needs root (fake-passwd covers it)")
    uid = _unused_uid() if mode == "unknown-uid" else os.getuid()
    tmpdir = shared_tmp / "tmp"
    tmpdir.mkdir(mode=0o700)
    os.chown(tmpdir, uid, uid) if mode == "unknown-uid" else None
    doc, err = _run(mode, shared_tmp, uid, tmpdir)
    assert doc["home"] is False and doc["uid"] == uid
    assert doc["shape"] == [1, 10] and doc["variant"] == "L00-dense-fp32"
    warnings = [line for line in err.splitlines() if "no home directory" in line]
    assert len(warnings) == 1, err
    cache = tmpdir / f"edge_runtime-{uid}"
    assert f"cached in {cache}" in warnings[0]
    assert cache.is_dir() and cache.stat().st_uid == uid and cache.stat().st_mode & 0o777 == 0o700
    if doc["can_spawn"]:       # the files were checked in a child and the verdicts kept there
        assert doc["probe"]["probed"] == 4
        (verdicts,) = json.loads((cache / "probe.json").read_text())["verdicts"].values()
        assert len(verdicts) == 4


def test_a_temp_folder_others_can_write_is_not_trusted(shared_tmp):
    # A folder of that name made by someone else (or left writable) could hold forged "this
    # file is fine" verdicts: the switcher then keeps its verdicts in memory only.
    tmpdir = shared_tmp / "tmp"
    tmpdir.mkdir()
    planted = tmpdir / f"edge_runtime-{os.getuid()}"
    planted.mkdir()
    planted.chmod(0o777)
    doc, err = _run("fake-passwd", shared_tmp, os.getuid(), tmpdir)
    assert doc["shape"] == [1, 10] and doc["probe"]["probed"] == 4
    assert "kept in memory only" in err and not (planted / "probe.json").exists()
