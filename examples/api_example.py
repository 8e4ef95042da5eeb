"""The Python API on the example gallery: python examples/api_example.py (from anywhere)."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the checkout's package; after `pip install .` the installed one is the same

import facenet  # noqa: E402

same = facenet.verify(HERE / "people/Juanes/Juanes_0001.jpg", HERE / "photos/Juanes_0003.jpg")
print(f"same person: {same.same} (distance {same.distance:.3f}, threshold {same.threshold:.3f})")

gallery = facenet.Gallery(HERE / "people", HERE.parent / "output" / "api_example_db")
print(f"enrolled: {', '.join(gallery.people)}")
for photo in sorted((HERE / "photos").iterdir()):
    names = [f"{f.name} ({f.score:.0f})" if f.score is not None and f.name != "Unknown" else f.name
             for f in gallery.recognize(photo)]
    print(f"{photo.name}: {', '.join(names) or 'no face'}")
