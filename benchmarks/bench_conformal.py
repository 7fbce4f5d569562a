"""Benchmark: per-pixel conformal calibration on 240×320 binary images (synthetic logits).

    python benchmarks/bench_conformal.py [--quick]

Synthetic logits come from :func:`planted_logits` in ``tests/planted.py`` (4 planted
rings, a per-image random effect), generated batch by batch from a seed. Each measurement
runs in a fresh worker process:

* ``memory``: peak memory of pixelwise calibration in histogram mode (stream N images into
  per-pixel histograms ``[C, H, W, 256]``, then thresholds) at N and N/10 — and, for
  comparison, of storing every score (exact mode) at N and N/10;
* ``timing``: time per image of score accumulation (scores from logits + histogram update;
  with the input validation ``fit`` adds; the exact store) vs the forward pass of the
  project's default MONAI UNet (channels 16-32-64-128, strides 2-2-2, 2 residual units) at
  240×320, batch 8, no grad — with 1 thread (the ratio target; stable on a shared machine)
  and with torch's default thread count;
* ``groupings``: k-means (4 clusters) and genetic-annuli fits on the per-pixel statistics of
  100 images, a whole Kandinsky ``fit_parts`` and a whole ``local`` ``fit_parts`` on the same histogram parts,
  and both again from exact scores of the same images (``fit_bank``, what ``mode="auto"`` keeps up to 2**26
  scores; target: local ≤ 2× Kandinsky k-means), also as a whole calibration of those images (the fit plus the
  UNet forward and the score pass per image from ``timing``, one thread); ``memory`` also runs the local method
  at N and N/10 (flat in N);
* ``evaluation``: streaming per-pixel coverage evaluation (19 levels: coverage, set sizes, empty
  and full sets; 16 and 64 test images; 1 thread and all cores) vs per-pixel Python loops on a
  16×16 crop, extrapolated to 240×320: over pixels, levels and classes in NumPy as research code
  does it, computing the same outputs (the target's baseline), and a stronger loop over pixels
  and classes only (vectorised over images and levels; coverage and set sizes); the crop results
  must agree. The loops are vectorised over images, so the ratio falls as test images grow;
* ``histogram_bias``: CE of histogram-mode vs exact-mode pixelwise calibration (48×64,
  n_cal 200): the cost of the conservative binning in coverage terms.

Workers use one torch thread (``--threads``): on a shared 2-core machine intra-op threads
wait for each other and timings scatter; the timing and evaluation workers also report all cores.
Peak memory is the peak resident set size (``VmHWM``, reset through ``/proc/self/clear_refs``
after setup, else ``ru_maxrss``) minus the resident size after setup; memory workers fix glibc's
mmap threshold at 128 KiB (``MALLOC_MMAP_THRESHOLD_``) so that freed batch buffers leave RSS. Time is wall-clock
inside the measured code (data generation excluded). Results: benchmarks/results/bench_conformal.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from coverage_loops import CropThresholds, loop_per_pixel, loop_per_pixel_and_level  # noqa: E402
from peak_memory import PeakMemory  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from segcal.io.jsonio import write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # planted.py: synthetic test logits

H, W, BATCH, CROP = 240, 320, 8, 16
RESULTS = Path(__file__).resolve().parent / "results" / "bench_conformal.json"
MARGINS, NOISE = [-0.5, 1.5, 4.0, 8.0], [1.0, 1.5, 1.0, 3.0]


def planted(shape=(H, W)) -> torch.Tensor:
    from planted import ring_map

    r = min(shape) / 2
    return ring_map(shape, [0.3 * r, 0.6 * r, 0.9 * r], centre_offset=(0.1 * r, -0.2 * r))


def batches(n: int, shape=(H, W), seed: int = 0):
    """``(logits [b, 2, H, W], labels [b, H, W])`` batches of ``n`` images in total."""
    from planted import planted_logits

    group_map = planted(shape)
    for i, start in enumerate(range(0, n, BATCH)):
        yield planted_logits(min(BATCH, n - start), group_map, MARGINS, NOISE, image_effect=0.5,
                             seed=seed * 1_000_003 + i)


def timed_stream(n: int, clock: list[float]):
    """Batches whose generation time is added to ``clock[0]`` (to subtract it)."""
    it = batches(n)
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        clock[0] += time.perf_counter() - t0
        yield batch


# -- workers ------------------------------------------------------------------------------------
def worker_memory(n: int, mode: str) -> dict:
    from segcal.conformal.accumulate import ScoreAccumulator
    from segcal.conformal.calibrator import PixelwiseCalibrator
    from segcal.conformal.scores import label_scores

    next(batches(BATCH))  # warm up allocator and imports
    memory = PeakMemory()
    gen = [0.0]
    t0 = time.perf_counter()
    if mode == "local":  # local method: two histogram parts, local CDFs, thresholds
        from segcal.conformal.local_calibrator import LocalCalibrator

        cp = LocalCalibrator(2, mode="histogram").fit(timed_stream(n, gen))
        cp.thresholds(0.1)
        stored = cp.cdf_.numel() * cp.cdf_.element_size()
    elif mode == "histogram":
        cp = PixelwiseCalibrator(2, mode="histogram").fit(timed_stream(n, gen))
        cp.thresholds(0.1)
        stored = cp.scores_.counts.numel() * cp.scores_.counts.element_size()
    else:  # store every score (exact mode), no thresholds
        acc = ScoreAccumulator(2, mode="exact", max_exact_scores=2**62)
        for logits, labels in timed_stream(n, gen):
            acc.update(*label_scores(logits, labels))
        stored = sum(t.numel() * t.element_size() for t in acc.store._scores + acc.store._labels)
    seconds = time.perf_counter() - t0 - gen[0]
    return {"images": n, "mode": mode, "peak_mib": memory.peak_mib(), "stored_mib": stored / 2**20,
            "seconds_excluding_data": seconds, "memory_method": memory.method}


def best_of(fns: dict, reps: int) -> dict:
    """Fastest of ``reps`` timings of each function, the functions run in turn (noise hits each alike)."""
    seconds = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - t0)
    return {name: min(t) for name, t in seconds.items()}


def worker_timing(reps: int) -> dict:
    from monai.networks.nets import UNet

    from segcal.conformal.accumulate import ScoreAccumulator
    from segcal.conformal.scores import label_scores
    from segcal.outputs import check_batch

    net = UNet(spatial_dims=2, in_channels=3, out_channels=2, channels=(16, 32, 64, 128), strides=(2, 2, 2),
               num_res_units=2).eval()
    images = torch.randn(BATCH, 3, H, W)
    logits, labels = next(batches(BATCH))
    hist = ScoreAccumulator(2, (H, W), mode="histogram")
    exact = ScoreAccumulator(2, (H, W), mode="exact", max_exact_scores=2**62)

    def validated() -> None:  # what ConformalCalibrator.fit does per batch
        check_batch(logits, labels, 2, 255, "logits", "softmax")
        hist.update(*label_scores(logits, labels))

    out = {"batch": BATCH}
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        net(images)  # warm-up
        seconds = {**best_of({"unet_forward": lambda: net(images)}, reps),
                   **best_of({"histogram_accumulation": lambda: hist.update(*label_scores(logits, labels)),
                              "with_input_validation": validated,
                              "exact_store": lambda: exact.update(*label_scores(logits, labels))}, 3 * reps)}
        out[f"threads_{threads}"] = {f"{name}_s_per_image": s / BATCH for name, s in seconds.items()}
    return out


def worker_groupings(n: int) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from segcal.conformal.accumulate import ScoreAccumulator, ScoreBank
    from segcal.conformal.calibrator import KandinskyCalibrator
    from segcal.conformal.grouping import pixel_statistics
    from segcal.conformal.grouping_annuli import annuli_grouping
    from segcal.conformal.grouping_kmeans import kmeans_grouping
    from segcal.conformal.local_calibrator import LocalCalibrator
    from segcal.conformal.scores import label_scores

    fit, cal = ScoreAccumulator(2, (H, W), mode="histogram"), ScoreAccumulator(2, (H, W), mode="histogram")
    bank = ScoreBank(2, (H, W))  # the same images as exact scores (what mode="auto" keeps up to 2**26 scores)
    for i, (logits, labels) in enumerate(batches(2 * n)):
        scores = label_scores(logits, labels)
        (fit if i % 2 else cal).update(*scores)
        bank.update(*scores)
    t0 = time.perf_counter()
    stats = pixel_statistics(fit, (0.6, 0.7, 0.8, 0.9))
    t_stats = time.perf_counter() - t0
    t0 = time.perf_counter()
    km = kmeans_grouping(stats, 4, 0)
    t_kmeans = time.perf_counter() - t0
    t0 = time.perf_counter()
    ann = annuli_grouping(stats, 4, 0)
    t_annuli = time.perf_counter() - t0
    fits = {"kmeans": lambda: KandinskyCalibrator("kmeans", 2).fit_parts({"fit": fit, "cal": cal}),
            "local": lambda: LocalCalibrator(2).fit_parts({"fit": fit, "cal": cal}),
            "kmeans_exact": lambda: KandinskyCalibrator("kmeans", 2).fit_bank(bank),
            "local_exact": lambda: LocalCalibrator(2).fit_bank(bank)}
    seconds = best_of(fits, 3)  # alternating, best of three: a shared machine's noise hits each fit alike
    t_fit, t_local, t_fit_exact, t_local_exact = (seconds[k] for k in fits)
    truth = planted().flatten().numpy()
    return {"fit_images": fit.num_images, "pixel_statistics_s": t_stats, "kmeans_fit_s": t_kmeans,
            "annuli_fit_s": t_annuli, "kandinsky_kmeans_fit_parts_s": t_fit, "local_fit_parts_s": t_local,
            "kandinsky_kmeans_fit_exact_s": t_fit_exact, "local_fit_exact_s": t_local_exact,
            "kmeans_ari_vs_planted": [adjusted_rand_score(truth, m.flatten().numpy()) for m in km],
            "annuli_ari_vs_planted": [adjusted_rand_score(truth, m.flatten().numpy()) for m in ann]}


def worker_evaluation(n_cal: int, n_test: int) -> dict:
    from segcal.conformal.calibrator import PixelwiseCalibrator
    from segcal.conformal.evaluation import CoverageAccumulator
    from segcal.conformal.scores import class_scores

    cp = PixelwiseCalibrator(2, mode="histogram").fit(batches(n_cal))
    test = [(class_scores(lg), y) for lg, y in batches(n_test, seed=1)]
    t_vec = float("inf")
    for _ in range(3):  # best of 3 (the first run also pays for first-touch page faults)
        acc = CoverageAccumulator(cp, min_test_labels=1)
        t0 = time.perf_counter()
        for s, y in test:
            acc.update_scores(s, y)
        res = acc.compute()
        t_vec = min(t_vec, time.perf_counter() - t0)
    top, left = (H - CROP) // 2, (W - CROP) // 2
    crop = (slice(top, top + CROP), slice(left, left + CROP))
    scores = torch.cat([s for s, _ in test])[:, :, crop[0], crop[1]]
    labels = torch.cat([y for _, y in test])[:, crop[0], crop[1]]
    thr = acc.thresholds[:, :, crop[0], crop[1]]
    t0 = time.perf_counter()
    cov_loop, sizes_loop = loop_per_pixel(thr, scores, labels)
    t_loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    cov_ref, sizes_ref, empty_ref, full_ref = loop_per_pixel_and_level(thr.numpy(), scores.numpy(), labels.numpy())
    t_ref = time.perf_counter() - t0
    crop_cov = res.coverage[:, :, crop[0], crop[1]].nan_to_num(-1)
    crop_sizes = res.set_size_map[:, crop[0], crop[1]]
    crop_acc = CoverageAccumulator(CropThresholds(thr), min_test_labels=1)  # empty / full sets on the crop alone
    crop_acc.update_scores(scores, labels)
    crop_res, labelled = crop_acc.compute(), int((labels < 2).sum())
    same = torch.equal(cov_loop.nan_to_num(-1), crop_cov) and \
        torch.allclose(torch.from_numpy(cov_ref).nan_to_num(-1), crop_cov) and \
        torch.allclose(sizes_loop.double() / len(labels), crop_sizes) and \
        torch.allclose(torch.from_numpy(sizes_ref).double() / len(labels), crop_sizes) and \
        torch.allclose(torch.from_numpy(empty_ref).double() / labelled, crop_res.empty_fraction) and \
        torch.allclose(torch.from_numpy(full_ref).double() / labelled, crop_res.full_fraction)
    scale = (H * W) / CROP**2
    return {"test_images": n_test, "levels": len(res.levels), "vectorised_s": t_vec,
            "loop_pixels_levels_crop_s": t_ref, "loop_pixels_levels_extrapolated_s": t_ref * scale,
            "loop_pixels_crop_s": t_loop, "loop_pixels_extrapolated_s": t_loop * scale,
            "crop_results_identical": same, "mean_ce": res.mean_ce, "mean_set_size": float(res.mean_set_size.mean())}


def worker_histogram_bias(n_cal: int) -> dict:
    from segcal.conformal.calibrator import PixelwiseCalibrator
    from segcal.conformal.evaluation import evaluate_coverage

    shape = (48, 64)
    cal = list(batches(n_cal, shape))
    test = list(batches(200, shape, seed=1))
    out = {}
    for mode in ("exact", "histogram"):
        res = evaluate_coverage(PixelwiseCalibrator(2, mode=mode).fit(cal), test)
        out[mode] = {"mean_ce": res.mean_ce, "coverage_at_0.9": res.summary()["coverage_at_0.9"],
                     "mean_set_size": float(res.mean_set_size.mean())}
    out["ce_histogram_minus_exact"] = out["histogram"]["mean_ce"] - out["exact"]["mean_ce"]
    return {"shape": list(shape), "n_cal": n_cal, **out}


WORKERS = {"memory": lambda a: worker_memory(a.n, a.mode), "timing": lambda a: worker_timing(a.reps),
           "groupings": lambda a: worker_groupings(a.n), "evaluation": lambda a: worker_evaluation(a.n, a.n_test),
           "histogram_bias": lambda a: worker_histogram_bias(a.n)}


# -- driver -------------------------------------------------------------------------------------
def run_worker(name: str, **kwargs) -> dict:
    cmd = [sys.executable, __file__, "--worker", name]
    for key, value in kwargs.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    t0 = time.perf_counter()
    # memory runs: a fixed mmap threshold, since glibc's dynamic one keeps freed batch buffers in
    # the heap, so RSS would grow with the number of batches although live memory does not
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"} if name == "memory" else None
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {name:<15} {kwargs} done in {time.perf_counter() - t0:6.1f} s (process)", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 200 vs 20 for memory, fewer images elsewhere")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=2000, help=argparse.SUPPRESS)
    parser.add_argument("--n-test", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="histogram", help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the workers (default 1)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if args.worker:
        torch.set_num_threads(args.threads)
        print(json.dumps(WORKERS[args.worker](args)))
        return

    big = 200 if args.quick else 2000
    small = big // 10
    load_before = os.getloadavg()
    print(f"bench_conformal: {H}x{W}, 2 classes, memory at N={big} vs N={small}")
    mem = {f"{mode}_{n}": run_worker("memory", n=n, mode=mode) for mode in ("histogram", "local", "exact")
           for n in (small, big)}
    timing = run_worker("timing", reps=2 if args.quick else 3)
    groupings = run_worker("groupings", n=32 if args.quick else 100)
    cores = os.cpu_count() or 1
    evaluation = {f"{n_test}_images_{threads}_threads": run_worker("evaluation", n=64, n_test=n_test, threads=threads)
                  for threads in sorted({1, cores}) for n_test in (16, 64)}
    bias = run_worker("histogram_bias", n=100 if args.quick else 200)
    t1 = timing["threads_1"]
    images = 2 * groupings["fit_images"]  # what a calibration of the same images also spends: the model and the pass
    pass_exact = images * (t1["unet_forward_s_per_image"] + t1["exact_store_s_per_image"])
    pass_histogram = images * (t1["unet_forward_s_per_image"] + t1["histogram_accumulation_s_per_image"])
    ratios = {
        "histogram_peak_memory_big_vs_small":
            mem[f"histogram_{big}"]["peak_mib"] / mem[f"histogram_{small}"]["peak_mib"],
        "exact_store_peak_memory_big_vs_small": mem[f"exact_{big}"]["peak_mib"] / mem[f"exact_{small}"]["peak_mib"],
        "local_peak_memory_big_vs_small": mem[f"local_{big}"]["peak_mib"] / mem[f"local_{small}"]["peak_mib"],
        "local_fit_time_vs_kandinsky_kmeans_histogram": groupings["local_fit_parts_s"]
        / groupings["kandinsky_kmeans_fit_parts_s"],
        "local_fit_time_vs_kandinsky_kmeans_exact": groupings["local_fit_exact_s"]
        / groupings["kandinsky_kmeans_fit_exact_s"],
        "local_calibration_time_vs_kandinsky_kmeans_exact": (pass_exact + groupings["local_fit_exact_s"])
        / (pass_exact + groupings["kandinsky_kmeans_fit_exact_s"]),
        "local_calibration_time_vs_kandinsky_kmeans_histogram": (pass_histogram + groupings["local_fit_parts_s"])
        / (pass_histogram + groupings["kandinsky_kmeans_fit_parts_s"]),
        "accumulation_time_vs_unet_forward": t1["histogram_accumulation_s_per_image"] / t1["unet_forward_s_per_image"],
        "validated_accumulation_time_vs_unet_forward": t1["with_input_validation_s_per_image"]
        / t1["unet_forward_s_per_image"],
        **{f"evaluation_speedup_vs_pixel_level_loop_{k}": e["loop_pixels_levels_extrapolated_s"] / e["vectorised_s"]
           for k, e in evaluation.items()},
        **{f"evaluation_speedup_vs_pixel_loop_{k}": e["loop_pixels_extrapolated_s"] / e["vectorised_s"]
           for k, e in evaluation.items()},
    }
    targets = {
        "histogram_peak_memory_big_vs_small <= 1.2": ratios["histogram_peak_memory_big_vs_small"] <= 1.2,
        "accumulation_time_vs_unet_forward <= 0.10": ratios["accumulation_time_vs_unet_forward"] <= 0.10,
        "kmeans_fit_s < 10": groupings["kmeans_fit_s"] < 10,
        "local_peak_memory_big_vs_small <= 1.2": ratios["local_peak_memory_big_vs_small"] <= 1.2,
        "local_fit_time_vs_kandinsky_kmeans_exact <= 2": ratios["local_fit_time_vs_kandinsky_kmeans_exact"] <= 2,
        "local_fit_time_vs_kandinsky_kmeans_histogram <= 2":
            ratios["local_fit_time_vs_kandinsky_kmeans_histogram"] <= 2,
        "local_calibration_time_vs_kandinsky_kmeans_exact <= 2":
            ratios["local_calibration_time_vs_kandinsky_kmeans_exact"] <= 2,
        "annuli_fit_s < 60": groupings["annuli_fit_s"] < 60,
        **{f"evaluation_speedup_vs_pixel_level_loop_{k} >= 100":
           ratios[f"evaluation_speedup_vs_pixel_level_loop_{k}"] >= 100 for k in evaluation},
    }
    report = {
        "config": {"height": H, "width": W, "classes": 2, "batch": BATCH, "big": big, "small": small,
                   "histogram_bins": 256, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                   "machine": platform.machine(), "python": platform.python_version(), "torch": torch.__version__,
                   "quick": args.quick, "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "memory": mem, "timing": timing, "groupings": groupings, "evaluation": evaluation,
        "histogram_bias": bias, "ratios": ratios, "targets": targets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)

    for key, m in mem.items():
        print(f"memory {key:<16} peak +{m['peak_mib']:7.0f} MiB (stored {m['stored_mib']:6.0f} MiB),"
              f" {m['seconds_excluding_data']:.1f} s")
    for key, t in timing.items():
        if key.startswith("threads_"):
            print(f"{key}: UNet forward {1e3 * t['unet_forward_s_per_image']:.1f} ms/image; accumulation"
                  f" {1e3 * t['histogram_accumulation_s_per_image']:.2f} ms/image"
                  f" ({1e3 * t['with_input_validation_s_per_image']:.2f} with input validation);"
                  f" exact store {1e3 * t['exact_store_s_per_image']:.2f} ms/image")
    print(f"k-means fit {groupings['kmeans_fit_s']:.2f} s, annuli fit {groupings['annuli_fit_s']:.2f} s,"
          f" Kandinsky fit_parts {groupings['kandinsky_kmeans_fit_parts_s']:.2f} s,"
          f" local fit_parts {groupings['local_fit_parts_s']:.2f} s; exact scores: k-means"
          f" {groupings['kandinsky_kmeans_fit_exact_s']:.2f} s, local {groupings['local_fit_exact_s']:.2f} s"
          f" (ARI vs planted: k-means {groupings['kmeans_ari_vs_planted']},"
          f" annuli {groupings['annuli_ari_vs_planted']})")
    for key, e in evaluation.items():
        print(f"evaluation {e['vectorised_s']:.3f} s ({key.replace('_', ' ')}) at {H}x{W}; loops on {CROP}x{CROP}"
              f" extrapolated: pixels x classes x levels {e['loop_pixels_levels_extrapolated_s']:.1f} s,"
              f" pixels x classes {e['loop_pixels_extrapolated_s']:.1f} s (identical on crop:"
              f" {e['crop_results_identical']})")
    print(f"histogram vs exact CE ({bias['shape']}, n_cal {bias['n_cal']}): {bias['histogram']['mean_ce']:.4f}"
          f" vs {bias['exact']['mean_ce']:.4f}")
    for key, value in ratios.items():
        print(f"  {key:<40} {value:8.3f}")
    for key, ok in targets.items():
        print(f"  target {key:<44} {'met' if ok else 'NOT met'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
