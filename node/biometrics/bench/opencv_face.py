"""OpenCV's side of bench/face_vs_opencv.sh: FaceDetectorYN + FaceRecognizerSF over the 400
ORL images, prepared by the shared data's recipe (resize to 184x224, 40 px replicated border),
timed per face and per stage on one thread (cv2.setNumThreads(1)).

python opencv_face.py MODELS_DIR [ROUNDS]; prints a table, then one JSON line.
"""

import json
import sys
import time

import cv2
import numpy as np


def stats(values):
    v = sorted(values)
    n = len(v)
    median = (v[n // 2 - 1] + v[n // 2]) / 2 if n % 2 == 0 else v[n // 2]
    p99 = v[min(max(int(np.ceil(0.99 * n)), 1), n) - 1]
    return median, p99


def main():
    models = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    cv2.setNumThreads(1)
    started = time.perf_counter()
    det = cv2.FaceDetectorYN.create(
        f"{models}/face_detection_yunet_2023mar.onnx", "", (320, 320), 0.5, 0.3, 5000
    )
    rec = cv2.FaceRecognizerSF.create(f"{models}/face_recognition_sface_2021dec.onnx", "")
    load = time.perf_counter() - started
    images = []
    for s in range(1, 41):
        for i in range(1, 11):
            img = cv2.imread(f"{models}/orl/s{s}/{i}.pgm")
            img = cv2.resize(img, (184, 224), interpolation=cv2.INTER_LINEAR)
            images.append(cv2.copyMakeBorder(img, 40, 40, 40, 40, cv2.BORDER_REPLICATE))
    h, w = images[0].shape[:2]
    det.setInputSize((w, h))
    started = time.perf_counter()
    det.detect(images[0])
    first = time.perf_counter() - started

    detect, align, embed, total = [], [], [], []
    for _ in range(rounds):
        for img in images:
            t0 = time.perf_counter()
            _, faces = det.detect(img)
            t1 = time.perf_counter()
            face = faces[np.argmax(faces[:, 14])]
            crop = rec.alignCrop(img, face)
            t2 = time.perf_counter()
            feature = rec.feature(crop)
            t3 = time.perf_counter()
            assert feature.size == 128
            detect.append(1e3 * (t1 - t0))
            align.append(1e3 * (t2 - t1))
            embed.append(1e3 * (t3 - t2))
            total.append(1e3 * (t3 - t0))
    out = {"side": "opencv", "version": cv2.__version__, "faces": len(total)}
    print(
        f"opencv {cv2.__version__}: {len(total)} faces ({w}x{h} px), models loaded in "
        f"{1e3 * load:.0f} ms, first detection {1e3 * first:.0f} ms"
    )
    print("stage      median ms   p99 ms")
    for name, values in [("detect", detect), ("align", align), ("embed", embed), ("total", total)]:
        m, p = stats(values)
        out[name] = [round(m, 4), round(p, 4)]
        print(f"{name:<10} {m:>9.3f} {p:>8.3f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
