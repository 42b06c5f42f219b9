"""FAISS HNSW on the vectors written by the `dedup_bench` example, for the side-by-side
comparison (`dedup_vs_faiss.sh`): IndexHNSWFlat, inner product, one thread for queries.

    python faiss_hnsw.py DIR M EF_CONSTRUCTION EF1,EF2,... [BUILD_THREADS]

Reads DIR/gallery.fvecs, DIR/queries.fvecs and DIR/truth.ivecs (the exact int8 top 10 from
the Rust side); writes DIR/faiss.tsv, one line per efSearch: recall@10 against the exact
float top 10 (IndexFlatIP) and against the int8 one, and queries per second (k = 10).
"""
import sys
import time

import faiss
import numpy as np


def read_vecs(path, dtype):
    raw = np.fromfile(path, dtype=np.int32)
    d = int(raw[0])
    rows = raw.reshape(-1, d + 1)
    assert (rows[:, 0] == d).all(), path
    return np.ascontiguousarray(rows[:, 1:]).view(dtype)


def recall(found, truth):
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth))
    return hits / truth.size


def main():
    out, m, efc, efs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    build_threads = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    xb = read_vecs(f"{out}/gallery.fvecs", np.float32)
    xq = read_vecs(f"{out}/queries.fvecs", np.float32)
    truth_int8 = read_vecs(f"{out}/truth.ivecs", np.int32)
    d = xb.shape[1]

    faiss.omp_set_num_threads(1)
    flat = faiss.IndexFlatIP(d)
    flat.add(xb)
    _, truth_float = flat.search(xq, 10)
    del flat

    faiss.omp_set_num_threads(build_threads)
    index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = efc
    t0 = time.perf_counter()
    index.add(xb)
    build = time.perf_counter() - t0
    print(f"FAISS {faiss.__version__} IndexHNSWFlat (M = {m}, efConstruction = {efc}), "
          f"{build_threads} thread(s): built {len(xb)} in {build:.1f} s")

    faiss.omp_set_num_threads(1)
    with open(f"{out}/faiss.tsv", "w") as tsv:
        tsv.write("ef\trecall10_float\trecall10_int8\tqps10\n")
        for ef in [int(e) for e in efs.split(",")]:
            index.hnsw.efSearch = ef
            index.search(xq[:50], 10)  # warm up
            t0 = time.perf_counter()
            found = np.empty((len(xq), 10), dtype=np.int64)
            for i in range(len(xq)):  # one query per call, as the node asks
                _, found[i : i + 1] = index.search(xq[i : i + 1], 10)
            qps = len(xq) / (time.perf_counter() - t0)
            rf, ri = recall(found, truth_float), recall(found, truth_int8)
            print(f"  efSearch {ef}: recall@10 {rf:.4f} (vs int8 exact {ri:.4f}), {qps:.0f} qps")
            tsv.write(f"{ef}\t{rf:.4f}\t{ri:.4f}\t{qps:.0f}\n")


if __name__ == "__main__":
    main()
