"""YuNet speed levers for live frames: the shipped int8 (block-quantized) model against its dequantized float twin,
and detection on a downscaled copy of a 640x480 frame.

    python bench/bench_yunet.py [--lfw_dir /work/shared/faces/lfw_dev] [--repeats 20] [--frames 6] [--json]

Float twin: every `DequantizeLinear` of the shipped ONNX whose inputs are initializers is replaced by a float32
initializer computed exactly as ONNX defines it (`facenet.models.sface.dequantize_linear`, the SFace converter's),
unused int8 initializers are dropped, and the plain-float graph is checked by `onnx.checker` and written to a temp
folder. Both files are loaded with `cv2.FaceDetectorYN` and run through the product's `YuNetDetector.detect`.

Frames: rocket.jpg (tests/data/misc) resized as background, with LFW DevTrain photos pasted on it: each photo's
central face (the shipped model's box on the 250x250 photo) cropped with a margin of a quarter of its width, shrunk
so the face is S px wide, pasted row by row 4-20 px apart, up to 24 per frame (pseudo-random S of 40-120 px for
parts 1-2; fixed S for part 3).

1. Speed, int8 against float: ms per `detect` on 640x480 and 1280x720 frames (the latter also runs the coarse pass),
   `cv2.setNumThreads` at its default and at 1; one loop interleaves models (alternating order), thread settings and
   frames; medians over every call, and the median of the per-call float/int8 ratios with the share of calls in
   which float was faster.
2. Agreement: the float twin's detections against int8's on tests/data/misc photos and on the pasted frames
   (boxes matched by IoU; largest box-coordinate and score differences).
3. Downscaled copy (report only): 640x480 frames with faces S px wide (24, 36, 48, 70, 100), detected at full
   size and with max_side 480 and 320 (shipped model, default threads): ms per detect (interleaved) and the share
   of pasted faces found (IoU >= 0.5 with the pasted box, at the default score 0.85).

Prints markdown tables (or JSON with --json). No timing is asserted anywhere; the machine's load makes single
numbers noisy, hence the interleaving and medians.

Measured (2 shared CPU cores, OpenCV 4.14, two runs of the default command): the float twin is not faster. Median
float/int8 ratio of paired calls 0.993-1.008 (640x480: ~16-17.5 ms, 1280x720: ~96-102 ms, at 2 threads and at 1),
float faster in 33-55 % of the pairs; the detections agree to 1e-4 px and 1e-5 in score (raw rows within 6e-5).
The shipped file is weight-only block quantization (DequantizeLinear on initializers, no QuantizeLinear): OpenCV
folds those into float weights when it loads the net, so both files run the same float network - unlike the fully
quantized `_int8.onnx` of public benchmarks. The product keeps the shipped file. Downscaled 640x480 frames (faces
found at 0.85): max_side 480 takes ~0.7x the full-size time and finds 90 % of 24 px faces (full: 100 %), all from
36 px; max_side 320 takes ~0.3x and finds 12 % of 24 px and 94 % of 36 px faces, all from 48 px.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnx  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

from facenet.detect.yunet import YUNET_NMS_THRESHOLD, YUNET_SCORE_THRESHOLD, YUNET_TOP_K, YuNetDetector  # noqa: E402
from facenet.images import load_image  # noqa: E402
from facenet.models.sface import dequantize_linear  # noqa: E402
from facenet.models.zoo import YUNET_ONNX, zoo_file  # noqa: E402

MISC = ROOT / "tests" / "data" / "misc"
PHOTOS = ["2008_001322.jpg", "2008_007676.jpg", "two_people.jpg", "alex-lacamoire.png", "camera.png", "dogs.jpg",
          "rocket.jpg", "coins.png"]
SPEED_SIZES = [(640, 480), (1280, 720)]
SCALE_SIZES = [24, 36, 48, 70, 100]
SCALE_SIDES = [None, 480, 320]
MAX_FACES = 24
"""At most this many faces are pasted on one frame."""


def default_lfw_dir() -> Path:
    for base in (ROOT.parent, ROOT.parent.parent):
        if (base / "shared" / "faces" / "lfw_dev").is_dir():
            return base / "shared" / "faces" / "lfw_dev"
    return ROOT.parent / "shared" / "faces" / "lfw_dev"


def float_yunet(source: Path) -> onnx.ModelProto:
    """The shipped YuNet ONNX with every constant `DequantizeLinear` folded into a float32 initializer."""
    model = onnx.load(source)
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    nodes, folded = [], []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and all(name in initializers for name in node.input if name):
            attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            arrays = [numpy_helper.to_array(initializers[name]) if name else None for name in node.input]
            arrays += [None] * (3 - len(arrays))
            weights = dequantize_linear(arrays[0], arrays[1], arrays[2], axis=attributes.get("axis", 1),
                                        block_size=attributes.get("block_size", 0))
            folded.append(numpy_helper.from_array(weights, node.output[0]))
        else:
            nodes.append(node)
    if any(node.op_type in ("DequantizeLinear", "QuantizeLinear") for node in nodes):
        raise ValueError("a (de)quantization node with non-constant inputs is left")
    used = {name for node in nodes for name in node.input} | {output.name for output in graph.output}
    kept = [t for t in graph.initializer if t.name in used]
    if any(t.data_type == onnx.TensorProto.INT8 for t in kept):
        raise ValueError("an int8 initializer is still used")
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + folded)
    onnx.checker.check_model(model)
    return model


def detector_from(path: Path) -> YuNetDetector:
    """The product's detector running the ONNX file `path`."""
    detector = YuNetDetector()
    detector._net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), YUNET_SCORE_THRESHOLD,
                                              YUNET_NMS_THRESHOLD, YUNET_TOP_K)
    return detector


def face_crops(lfw_dir: Path, detector: YuNetDetector, count: int) -> list[tuple[np.ndarray, tuple]]:
    """`count` LFW photos' central faces: (crop with a quarter face width of margin, face box in the crop)."""
    paths = sorted(lfw_dir.glob("*/*.jpg"))
    rng = np.random.default_rng(0)
    crops = []
    for index in rng.permutation(len(paths)):
        image = load_image(paths[index])
        found = [d for d in detector.detect(image) if d.score >= 0.9]
        if not found:
            continue
        left, top, right, bottom = found[0].box
        margin = (right - left) // 4
        x0, y0 = max(0, left - margin), max(0, top - margin)
        x1, y1 = min(image.shape[1], right + margin), min(image.shape[0], bottom + margin)
        crops.append((image[y0:y1, x0:x1].copy(), (left - x0, top - y0, right - x0, bottom - y0)))
        if len(crops) == count:
            break
    return crops


def background(size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(load_image(MISC / "rocket.jpg"), size, interpolation=cv2.INTER_AREA)


def paste(frame: np.ndarray, crops: list, widths: list[int], rng) -> list[tuple[float, ...]]:
    """Paste crops (face `widths[i]` px wide) row by row, 4-20 px apart, as many as fit; returns the pasted boxes."""
    height, width = frame.shape[:2]
    boxes = []
    x, y, row_height = 0, 0, 0
    for (crop, box), face_width in zip(crops, widths, strict=False):
        scale = face_width / (box[2] - box[0])
        small = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        h, w = small.shape[:2]
        if x + w > width:
            x, y, row_height = 0, y + row_height + int(rng.integers(4, 21)), 0
        if y + h > height:
            break
        frame[y : y + h, x : x + w] = small
        boxes.append(tuple([x + v * scale if i % 2 == 0 else y + v * scale for i, v in enumerate(box)]))
        x, row_height = x + w + int(rng.integers(4, 21)), max(row_height, h)
    return boxes


def iou(a, b) -> float:
    left, top, right, bottom = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, right - left) * max(0.0, bottom - top)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def compare(reference: list, other: list) -> tuple[int, int, float, float]:
    """(faces in reference, matched ones, largest box-coordinate difference, largest score difference)."""
    matched, box_diff, score_diff = 0, 0.0, 0.0
    if len(reference) != len(other):
        box_diff = float("inf")
    for ref in reference:
        best = max(other, key=lambda d: iou(ref.box, d.box), default=None)
        if best is None or iou(ref.box, best.box) < 0.5:
            continue
        matched += 1
        box_diff = max(box_diff, float(np.abs(np.subtract(ref.box, best.box)).max()),
                       float(np.abs(ref.points - best.points).max()))
        score_diff = max(score_diff, abs(ref.score - best.score))
    return len(reference), matched, box_diff, score_diff


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def speed(models: dict, frames: dict, repeats: int, default_threads: int) -> list[dict]:
    times = {(size, threads, name): [] for size in frames for threads in (default_threads, 1) for name in models}
    ratios = {(size, threads): [] for size in frames for threads in (default_threads, 1)}
    names = list(models)
    for repeat in range(repeats):
        for threads in (default_threads, 1) if repeat % 2 == 0 else (1, default_threads):
            cv2.setNumThreads(threads)
            for size, size_frames in frames.items():
                for frame in size_frames:
                    order = names if repeat % 2 == 0 else names[::-1]
                    spent = {name: timed(lambda name=name, frame=frame: models[name].detect(frame)) for name in order}
                    for name in names:
                        times[(size, threads, name)].append(spent[name])
                    ratios[(size, threads)].append(spent["float"] / spent["int8"])
    cv2.setNumThreads(default_threads)
    rows = []
    for size in frames:
        for threads in (default_threads, 1):
            ratio = ratios[(size, threads)]
            rows.append({
                "frame": f"{size[0]}x{size[1]}", "threads": threads, "calls": len(ratio),
                "int8_ms": statistics.median(times[(size, threads, "int8")]),
                "float_ms": statistics.median(times[(size, threads, "float")]),
                "ratio": statistics.median(ratio), "float_faster": sum(r < 1 for r in ratio) / len(ratio),
            })
    return rows


def load_times(paths: dict, repeats: int) -> dict:
    spent = {name: [] for name in paths}
    for repeat in range(repeats):
        for name in (list(paths) if repeat % 2 == 0 else list(paths)[::-1]):
            spent[name].append(timed(lambda name=name: cv2.FaceDetectorYN.create(str(paths[name]), "", (320, 320))))
    return {name: statistics.median(values) for name, values in spent.items()}


def downscaled(detector: YuNetDetector, crops: list, frames_per_size: int, repeats: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(2)
    for face_width in SCALE_SIZES:
        frames = []
        for index in range(frames_per_size):
            frame = background((640, 480))
            chosen = [crops[(index * 7 + i) % len(crops)] for i in range(MAX_FACES)]
            frames.append((frame, paste(frame, chosen, [face_width] * MAX_FACES, rng)))
        times = {side: [] for side in SCALE_SIDES}
        for repeat in range(repeats):
            for side in SCALE_SIDES if repeat % 2 == 0 else SCALE_SIDES[::-1]:
                for frame, _ in frames:
                    times[side].append(timed(lambda frame=frame, side=side: detector.detect(frame, max_side=side)))
        row = {"face_px": face_width, "faces": sum(len(boxes) for _, boxes in frames)}
        for side in SCALE_SIDES:
            found = extra = 0
            for frame, boxes in frames:
                detections = detector.detect(frame, max_side=side)
                found += sum(any(iou(box, d.box) >= 0.5 for d in detections) for box in boxes)
                extra += sum(not any(iou(box, d.box) >= 0.5 for box in boxes) for d in detections)
            key = side or 640
            row[f"found_{key}"] = found / row["faces"]
            row[f"extra_{key}"] = extra
            row[f"ms_{key}"] = statistics.median(times[side])
        rows.append(row)
    return rows


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    lines = ["| " + " | ".join(title for title, _, _ in columns) + " |",
             "|" + "|".join("---:" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(format(row[key], spec) for _, key, spec in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw_dir", type=Path, default=default_lfw_dir())
    parser.add_argument("--repeats", type=int, default=20, help="timing rounds (each: every frame, both models)")
    parser.add_argument("--frames", type=int, default=6, help="frames per size (speed and downscale parts)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    default_threads = cv2.getNumThreads()
    source = zoo_file(YUNET_ONNX)
    with tempfile.TemporaryDirectory() as folder:
        float_path = Path(folder) / "yunet_float32.onnx"
        onnx.save(float_yunet(source), float_path)
        paths = {"int8": source, "float": float_path}
        sizes = {name: path.stat().st_size for name, path in paths.items()}
        models = {name: detector_from(path) for name, path in paths.items()}
        loads = load_times(paths, 10)

    shipped = YuNetDetector()
    crops = face_crops(args.lfw_dir, shipped, 120)
    rng = np.random.default_rng(1)
    frames, pasted = {}, {}
    for size in SPEED_SIZES:
        frames[size], pasted[size] = [], []
        for index in range(args.frames):
            frame = background(size)
            widths = [int(w) for w in rng.integers(40, 121, MAX_FACES)]
            chosen = [crops[(index * 11 + i) % len(crops)] for i in range(MAX_FACES)]
            boxes = paste(frame, chosen, widths, rng)
            frames[size].append(frame)
            pasted[size].append(boxes)

    agreement = []
    for name in PHOTOS:
        image = load_image(MISC / name)
        faces, matched, box_diff, score_diff = compare(models["int8"].detect(image), models["float"].detect(image))
        agreement.append({"image": name, "faces": faces, "matched": matched, "box": box_diff, "score": score_diff})
    for size in SPEED_SIZES:
        totals = [compare(models["int8"].detect(f), models["float"].detect(f)) for f in frames[size]]
        found = sum(sum(any(iou(b, d.box) >= 0.5 for d in models["int8"].detect(f)) for b in boxes)
                    for f, boxes in zip(frames[size], pasted[size], strict=True))
        agreement.append({
            "image": f"{len(totals)} pasted {size[0]}x{size[1]} frames ({found}/{sum(map(len, pasted[size]))} "
                     "pasted faces found by int8)",
            "faces": sum(t[0] for t in totals), "matched": sum(t[1] for t in totals),
            "box": max(t[2] for t in totals), "score": max(t[3] for t in totals),
        })

    speed_rows = speed(models, frames, args.repeats, default_threads)
    scale_rows = downscaled(shipped, crops, args.frames * 3, max(3, args.repeats // 3))

    if args.json:
        print(json.dumps({"sizes": sizes, "load_ms": loads, "speed": speed_rows, "agreement": agreement,
                          "downscaled": scale_rows}, indent=1, default=str))
        return
    print(f"cv2 {cv2.__version__}, default threads {default_threads}; files: int8 {sizes['int8']} bytes, "
          f"float {sizes['float']} bytes; FaceDetectorYN.create median ms: int8 {loads['int8']:.1f}, "
          f"float {loads['float']:.1f}\n")
    print("### int8 vs float, ms per detect\n")
    print(table(speed_rows, [("frame", "frame", "s"), ("threads", "threads", "d"), ("calls", "calls", "d"),
                             ("int8 ms", "int8_ms", ".1f"), ("float ms", "float_ms", ".1f"),
                             ("float/int8 (median of pairs)", "ratio", ".3f"),
                             ("float faster in", "float_faster", ".0%")]))
    print("\n### float twin against int8 (detections)\n")
    print(table(agreement, [("image", "image", "s"), ("int8 faces", "faces", "d"), ("matched", "matched", "d"),
                            ("max box/point diff px", "box", ".4f"), ("max score diff", "score", ".5f")]))
    print("\n### 640x480 frame detected on a downscaled copy (int8, default threads)\n")
    columns = [("face px", "face_px", "d"), ("faces", "faces", "d")]
    for side in SCALE_SIDES:
        key = side or 640
        label = "full" if side is None else f"max_side {side}"
        columns += [(f"{label}: ms", f"ms_{key}", ".1f"), (f"{label}: found", f"found_{key}", ".0%"),
                    (f"{label}: extra", f"extra_{key}", "d")]
    print(table(scale_rows, columns))


if __name__ == "__main__":
    main()
