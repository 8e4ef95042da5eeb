"""The command line with inputs that used to crash or go unreported (issue 14, items 1, 2, 3 and 14): a person
whose name holds a newline, tiny images, a symlink loop in an --input folder; with --json every input has a line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
JUANES = DATA / "people" / "Juanes"


@pytest.mark.skipif(os.name != "posix", reason="newlines in folder names, symlinks")
def test_bad_inputs_are_one_line_each_and_the_run_goes_on(tmp_path, weights_dir):
    import facenet

    facenet.face_pipeline(weights_dir=weights_dir)  # the default model converted once into the session's weights
    data = tmp_path / "data"
    (data / "Juan\nEs\r").mkdir(parents=True)  # a name with a newline and a CR
    for photo in ("Juanes_0001.jpg", "Juanes_0002.jpg"):
        shutil.copy2(JUANES / photo, data / "Juan\nEs\r" / photo)
    inputs = tmp_path / "in"
    inputs.mkdir()
    photo = Image.open(DATA / "misc" / "two_people.jpg")
    for side in ((1, 1), (2, 2), (8, 8), (3, 2000), (16, 16)):  # (height, width) of a real photo squeezed
        photo.resize(side[::-1]).save(inputs / f"tiny_{side[0]}x{side[1]}.png")
    os.symlink("loop.jpg", inputs / "loop.jpg")
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    shutil.copy2(JUANES / "Juanes_0003.jpg", os.fsencode(inputs) + b"/caf\xe9.jpg")  # a Latin-1 file name
    shutil.copy2(JUANES / "Juanes_0003.jpg", inputs / "zz_juanes.jpg")  # last: must still be processed
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "-t", "False", "-wc", "False", "--input", str(inputs), "--json",
         "--data_dir", str(data), "--database_dir", str(tmp_path / "db"), "--output_dir", str(tmp_path / "out"),
         "--weights_path", str(weights_dir)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr  # the loop and the broken file are errors
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_source = {Path(line["source"]).name: line for line in lines}
    assert by_source["loop.jpg"] == {"source": str(inputs / "loop.jpg"), "error": "symlink loop (skipped)"}
    assert "error" in by_source["broken.jpg"] and "faces" not in by_source["broken.jpg"]
    for side in ("1x1", "2x2", "8x8", "3x2000", "16x16"):
        assert by_source[f"tiny_{side}.png"] == {"source": str(inputs / f"tiny_{side}.png"), "frame": None,
                                                 "faces": 0}
    assert by_source["caf\\xe9.jpg"]["name"] == "Juan\nEs\r"  # its source shown with the byte escaped
    named = by_source["zz_juanes.jpg"]
    assert named["name"] == "Juan\nEs\r"  # the name is intact in JSON; only the drawn label is cleaned
    assert set(named) == {"source", "frame", "box", "name", "distance", "score"}
    assert (tmp_path / "out" / "in" / "zz_juanes.jpg").is_file()
    assert "loop.jpg: symlink loop" in result.stderr
