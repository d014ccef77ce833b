#!/usr/bin/python3
"""bench_ops.py: Firefly's nn ops against PyTorch CPU, forward + backward.

Run with Debian's /usr/bin/python3 (python3-torch), from anywhere:

    /usr/bin/python3 tests/bench/bench_ops.py [--json build/bench/ops.json]
    BENCH_QUICK=1 ...   # a smoke run: 3 repetitions, short samples

The engine runs in a subprocess, `./firefly tests/bench/ff_worker.lua`, driven
over a line protocol (see that file); it lives for all the repetitions of a
case and is restarted between cases (it starts in milliseconds), so that its
peak RSS is that case's alone. PyTorch runs in this process.
For every case and thread count both sides are set up, warmed up, then
timed in alternating order (ff, torch, torch, ff, ...), and the medians are
reported. The engine times its own loop with ff.clock(), so the pipe is
never timed; a step shorter than SAMPLE_S is repeated within a sample (the
same count on both sides) and the sample divided by it.

Thread counts. The engine's only threads are OpenBLAS's, set with
ff.set_num_threads(n). PyTorch has two pools: its OpenMP pool
(torch.set_num_threads) and the OpenBLAS it links (the same Debian
libopenblas, whose openblas_set_num_threads we call through ctypes). At n = 1
both are 1. At n = 2 a short pre-pass times torch in three configurations,
omp/blas = 2/2, 1/2 and 2/1, and the fastest is the one interleaved with the
engine: two busy pools on two cores fight (2/2 is several times slower on
small GEMMs, 2/x wins on convolutions), and the engine should be measured
against the best torch can do on the machine.
Between samples at n > 1 the driver sleeps briefly, so that the spinning
BLAS threads of one process have parked before the other process runs; each
side then runs as many untimed lead-in steps as the sample has (at least
SAMPLE_S of work) straight before its timed ones, so that a sample is a
steady-state step, as in an epoch, not the first steps after an idle pause.
One lead-in step was not enough: after the pause a core runs a step at up
to half speed for its first 25-50 ms (measured on the engine at 1 and 2
threads alike), and since both sides time the same number of steps, that
ramp fell wholly in the faster side's sample and only partly in the slower
side's.

Nothing here asserts: the targets are printed beside the ratios.
"""
import argparse
import ctypes
import gc
import json
import math
import os
import platform
import select
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The interpreter to bench; FIREFLY=/path/to/firefly benches another build
# (it finds its own lib/ beside itself).
FIREFLY = os.environ.get("FIREFLY") or os.path.join(ROOT, "firefly")
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
REPS = 3 if QUICK else 15          # timed repetitions per side (odd: the median is a sample)
WARMUP = 1 if QUICK else 2         # untimed rounds per side after setup's own warm-up step
SAMPLE_S = 0.01 if QUICK else 0.03  # a sample repeats a short step to last about this long
PREPASS = 3                        # samples per torch thread config when choosing one
GAP_S = 0.1                        # pause between samples at n > 1 (OpenBLAS spins ~0.1 s)
THREADS = (1, 2)
REPLY_TIMEOUT_S = 600

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:  # the product never depends on torch; the bench does
    sys.exit("bench_ops: cannot import torch (%s); install python3-torch "
             "(apt-get install -y python3-torch) and run with /usr/bin/python3" % e)


# ---------------------------------------------------------------- cases ---
# Each torch case mirrors the function of the same name in ff_worker.lua:
# it takes mk(shape, salt, scale) and labels(n) and returns (step, grads).

def _clear(ts):
    for t in ts:
        t.grad = None


def linear_case(B, I, O):
    def make(mk, labels):
        x = mk((B, I), 1, 1)
        W = mk((O, I), 2, 0.05).requires_grad_()
        b = mk((O,), 3, 0.1).requires_grad_()
        ps = [W, b]

        def step():
            _clear(ps)
            y = F.linear(x, W, b)
            y.sum().backward()
            return y
        return step, ps
    return make


def conv_case(B, C, HW):
    def make(mk, labels):
        x = mk((B, C, HW, HW), 1, 1).requires_grad_()
        W = mk((C, C, 3, 3), 2, 0.05).requires_grad_()
        b = mk((C,), 3, 0.1).requires_grad_()
        ps = [x, W, b]

        def step():
            _clear(ps)
            y = F.conv2d(x, W, b, stride=1, padding=1)
            y.sum().backward()
            return y
        return step, ps
    return make


def bn_relu(mk, labels):
    C = 32
    x = mk((128, C, 28, 28), 1, 1).requires_grad_()
    g = (mk((C,), 2, 0.1) + 1).requires_grad_()
    be = mk((C,), 3, 0.1).requires_grad_()
    rm, rv = torch.zeros(C), torch.ones(C)
    ps = [x, g, be]

    def step():
        _clear(ps)
        y = F.relu(F.batch_norm(x, rm, rv, g, be, training=True, momentum=0.1, eps=1e-5))
        y.sum().backward()
        return y
    return step, ps


def mlp_step(mk, labels):
    x = mk((128, 784), 1, 1)
    y = labels(128)
    sizes = (784, 256, 256, 10)
    ps = []
    for l in range(1, 4):
        ps.append(mk((sizes[l], sizes[l - 1]), 2 * l, 1 / math.sqrt(sizes[l - 1])).requires_grad_())
        ps.append(mk((sizes[l],), 2 * l + 1, 0.01).requires_grad_())
    lr = 0.01

    def step():
        _clear(ps)
        h = F.relu(F.linear(x, ps[0], ps[1]))
        h = F.relu(F.linear(h, ps[2], ps[3]))
        loss = F.cross_entropy(F.linear(h, ps[4], ps[5]), y)
        loss.backward()
        with torch.no_grad():
            for p in ps:
                p.sub_(p.grad * lr)  # the same temporary as the engine's p:sub_(p.grad * lr)
        return loss
    return step, ps


def small_vgg(mk):
    """examples/fashion_cnn.lua's network with ff_worker.lua's deterministic
    parameters (same order, same formula)."""
    layers, c = [], 1
    for v in (32, 32, "M", 64, 64, "M"):
        if v == "M":
            layers.append(torch.nn.MaxPool2d(2))
        else:
            layers += [torch.nn.Conv2d(c, v, 3, padding=1, bias=False),
                       torch.nn.BatchNorm2d(v), torch.nn.ReLU()]
            c = v
    layers += [torch.nn.Flatten(), torch.nn.Linear(64 * 7 * 7, 10)]
    net = torch.nn.Sequential(*layers)
    ps = list(net.parameters())
    with torch.no_grad():
        for i, p in enumerate(ps, start=1):
            if p.dim() > 1:
                p.copy_(mk(tuple(p.shape), 10 + i, 1 / math.sqrt(p.numel() / p.shape[0])))
            else:
                p.copy_(mk(tuple(p.shape), 10 + i, 0.1) + 1)
    return net, ps


def vgg_step(mk, labels):
    net, ps = small_vgg(mk)
    x, y = mk((128, 1, 28, 28), 1, 1), labels(128)
    opt = torch.optim.SGD(ps, lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss
    return step, ps


def vgg_infer(mk, labels):
    net, _ = small_vgg(mk)
    net.eval()
    x = mk((128, 1, 28, 28), 1, 1)

    def step():
        with torch.no_grad():
            return net(x)
    return step, []


def sgemm_1024(mk, labels):
    a, b = mk((1024, 1024), 1, 1), mk((1024, 1024), 2, 1)
    return (lambda: a.mm(b)), []


def mk_random(shape, salt, scale):
    return torch.randn(*shape) * scale


def labels_random(n):
    return torch.randint(0, 10, (n,))


def mk_det(shape, salt, scale):
    """scale * sin(0.7548776662 * i + salt) over the flat index, in double,
    rounded to float: the same numbers as ff_worker.lua's mk_det."""
    n = math.prod(shape)
    v = torch.sin(torch.arange(n, dtype=torch.float64) * 0.7548776662 + salt) * scale
    return v.float().reshape(shape)


def labels_det(n):
    return (torch.arange(n) * 7) % 10  # ff_worker.lua: (i * 7) % 10 + 1, 1-based


B = 128
CASES = [
    # name, label, GFLOP per step (None: not GEMM-bound), target ff/torch, torch maker
    ("sgemm_1024", "sgemm 1024x1024x1024 (ceiling)", 2 * 1024**3 / 1e9, None, sgemm_1024),
    ("linear_784_256", "linear 128x784->256", 4 * B * 784 * 256 / 1e9, 1.0, linear_case(B, 784, 256)),
    ("linear_256_10", "linear 128x256->10", 4 * B * 256 * 10 / 1e9, 1.0, linear_case(B, 256, 10)),
    ("conv_32", "conv3x3 128x32x28x28 32->32", 54 * B * 28 * 28 * 32 * 32 / 1e9, 0.9, conv_case(B, 32, 28)),
    ("conv_64", "conv3x3 128x64x28x28 64->64", 54 * B * 28 * 28 * 64 * 64 / 1e9, 0.9, conv_case(B, 64, 28)),
    ("bn_relu", "batch_norm+relu 128x32x28x28", None, 1.0, bn_relu),
    ("mlp_step", "MLP 784-256-256-10 SGD step",
     2 * B * (3 * (256 * 256 + 256 * 10) + 2 * 784 * 256) / 1e9, 0.8, mlp_step),
    ("vgg_step", "small VGG train step (fashion_cnn)", None, 0.9, vgg_step),
    ("vgg_infer", "small VGG inference, batch 128", None, 0.9, vgg_infer),
]

FLOP_NOTES = [
    "sgemm m=n=k=1024: 2*m*n*k (the ceiling: its GFLOP/s at each thread count, measured by the engine in this run)",
    "linear (x needs no grad): forward 2*B*in*out + dW 2*B*in*out = 4*B*in*out",
    "conv3x3 (x needs grad): forward, dW and dx each 2*B*H*W*Cin*Cout*9 = 54*B*H*W*Cin*Cout",
    "MLP step: forward 2*B*sum(in*out) + dW of 3 layers + dx of layers 2, 3 = 2*B*(3*(256*256+256*10) + 2*784*256)",
    "bias, relu, loss and update terms are left out of the counts",
]


# ------------------------------------------------------------- helpers ---

def proc_status_kb(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def reset_peak_rss():
    """VmHWM := current RSS (Linux >= 4.0); False when refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


_libc = None


def trim_heap():
    """Give free heap memory back to the OS (untimed), so that a case's peak
    RSS is not inflated by what earlier cases left in malloc's free lists."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL("libc.so.6")
        _libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def loaded_openblas():
    with open("/proc/self/maps") as f:
        for line in f:
            p = line.split()[-1]
            if "openblas" in p and p.startswith("/"):
                return p
    return None


class TorchBlas:
    """The OpenBLAS torch loaded, reached through ctypes (None if not found)."""

    def __init__(self):
        self.path = loaded_openblas()
        self.lib = None
        if self.path:
            try:
                lib = ctypes.CDLL(self.path)
                lib.openblas_get_config.restype = ctypes.c_char_p
                lib.openblas_get_corename.restype = ctypes.c_char_p
                lib.openblas_set_num_threads.argtypes = [ctypes.c_int]
                self.lib = lib
            except (OSError, AttributeError):
                self.lib = None

    def set_threads(self, n):
        if self.lib:
            self.lib.openblas_set_num_threads(n)

    def threads(self):
        return self.lib.openblas_get_num_threads() if self.lib else None

    def config(self):
        return self.lib.openblas_get_config().decode() if self.lib else "?"

    def corename(self):
        return self.lib.openblas_get_corename().decode() if self.lib else "?"


class Worker:
    """The engine side: ./firefly tests/bench/ff_worker.lua over pipes.
    Any failure (crash, timeout) turns into an "error:" reply, never an
    exception; a dead worker is restarted at the next setup."""

    def __init__(self):
        self.proc = None
        self.dead_reason = None

    def start(self):
        self.proc = subprocess.Popen(
            [FIREFLY, os.path.join(ROOT, "tests/bench/ff_worker.lua")],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
            text=True, bufsize=1)
        self.dead_reason = None

    def ask(self, line, timeout=REPLY_TIMEOUT_S):
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                return "error: worker exited with status %s" % self.proc.returncode
            self.start()
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            return "error: worker pipe: %s" % e
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.kill()
            return "error: worker timed out after %d s on %r" % (timeout, line)
        reply = self.proc.stdout.readline()
        if not reply:
            rc = self.proc.wait()
            self.proc = None
            return "error: worker died (exit status %s) on %r" % (rc, line)
        return reply.strip()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def quit(self):
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        self.proc = None


def loadavg():
    """The 1, 5 and 15 minute load averages: other work on this 2-core
    machine shows up as noise in both columns."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def busy(avg):
    try:
        return float(avg.split()[0]) > 0.5
    except (ValueError, IndexError):
        return False


def median(v):
    s = sorted(v)
    return s[len(s) // 2] if len(s) % 2 else 0.5 * (s[len(s) // 2 - 1] + s[len(s) // 2])


def compare_checks(a, b, tol=2e-3):
    """Largest relative difference between two lists of norms, or None."""
    if len(a) != len(b):
        return None
    worst = 0.0
    for x, y in zip(a, b):
        if math.isnan(x) or math.isnan(y):
            return float("inf")
        worst = max(worst, abs(x - y) / max(abs(x), abs(y), 1e-6))
    return worst


# ------------------------------------------------------------- measure ---

def torch_configs(n, blas):
    if n == 1:
        return [(1, 1)]
    if blas.lib is None:
        return [(n, None)]
    return [(n, n), (1, n), (n, 1)]


def cfg_name(cfg):
    return "%d/%s" % (cfg[0], "?" if cfg[1] is None else cfg[1])


def set_torch_threads(cfg, blas):
    omp, b = cfg
    torch.set_num_threads(omp)
    if b is not None:
        blas.set_threads(b)


def run_torch(step, inner, lead=0):
    for _ in range(lead):
        step()
    t0 = time.perf_counter()
    for _ in range(inner):
        step()
    return time.perf_counter() - t0


def measure_case(worker, blas, case, n):
    name, label, gflop, target, make = case
    row = {"case": name, "label": label, "threads": n, "gflop": gflop, "target": target,
           "ff_ms": None, "torch_ms": None, "torch_cfg": None, "torch_prepass_ms": {},
           "ff_status": "ok", "inner": None}

    # Engine side first, in a fresh worker (it starts in milliseconds), so
    # that its peak RSS is this case's alone; then torch.
    worker.quit()
    worker.start()
    r = worker.ask("setup %s %d" % (name, n))
    ff_ok = r == "ok"
    if not ff_ok:
        row["ff_status"] = r

    gc.collect()
    trim_heap()
    reset_peak_rss()
    configs = torch_configs(n, blas)
    set_torch_threads(configs[0], blas)
    torch.manual_seed(0)
    step, _ = make(mk_random, labels_random)
    step()

    # Calibrate the inner repetition count on the faster side, so that a
    # sample of a microsecond-scale step is long enough to time.
    t_torch = run_torch(step, 1)
    t_ff = None
    if ff_ok:
        r = worker.ask("run 1")
        if r.startswith("time "):
            t_ff = float(r.split()[1])
        else:
            ff_ok, row["ff_status"] = False, r
    fastest = min(t for t in (t_torch, t_ff) if t is not None)
    inner = max(1, min(2000, math.ceil(SAMPLE_S / max(fastest, 1e-7))))
    row["inner"] = inner

    # With several torch thread configurations, a short pre-pass (PREPASS
    # samples each, median) picks the fastest; only that one is interleaved
    # with the engine, so torch never switches pools inside the timed part.
    cfg = configs[0]
    if len(configs) > 1:
        for c in configs:
            set_torch_threads(c, blas)
            run_torch(step, inner)
            row["torch_prepass_ms"][cfg_name(c)] = median(
                [run_torch(step, inner) / inner for _ in range(PREPASS)]) * 1e3
        cfg = min(configs, key=lambda c: row["torch_prepass_ms"][cfg_name(c)])
    set_torch_threads(cfg, blas)
    row["torch_cfg"] = cfg_name(cfg)

    sides = ["ff", "torch"] if ff_ok else ["torch"]
    samples = {s: [] for s in sides}
    gap = GAP_S if n > 1 else 0.0
    lead = inner if gap else 0  # untimed steps straight before each sample after a pause
    row["lead"] = lead
    for rep in range(-WARMUP, REPS):
        order = sides if rep % 2 == 0 else sides[::-1]  # ff, torch, torch, ff, ...
        for side in order:
            if gap:
                time.sleep(gap)
            if side == "ff":
                if not ff_ok:
                    continue
                r = worker.ask("run %d %d" % (inner, lead))
                if not r.startswith("time "):
                    ff_ok, row["ff_status"] = False, r
                    continue
                t = float(r.split()[1])
            else:
                t = run_torch(step, inner, lead)
            if rep >= 0:
                samples[side].append(t / inner)

    if ff_ok and len(samples["ff"]) == REPS:
        row["ff_ms"] = median(samples["ff"]) * 1e3
        row["ff_min_ms"] = min(samples["ff"]) * 1e3
        row["ff_samples_ms"] = [v * 1e3 for v in samples["ff"]]
    row["torch_ms"] = median(samples["torch"]) * 1e3
    row["torch_min_ms"] = min(samples["torch"]) * 1e3
    row["torch_samples_ms"] = [v * 1e3 for v in samples["torch"]]

    # Peak resident memory of each process during this case.
    row["torch_rss_mib"] = proc_status_kb("VmHWM") / 1024
    m = worker.ask("mem")
    if m.startswith("mem "):
        hwm, _, live, peak = (int(v) for v in m.split()[1:])
        row["ff_rss_mib"] = hwm / 1024
        row["ff_tensor_peak_mib"] = peak / 2**20
    else:
        row["ff_rss_mib"] = None
    del step
    gc.collect()
    return row


# The small VGG's max pools meet near-ties: window values that differ by
# less than the two engines' float rounding (e.g. 0.7972037 vs 0.7972054 in
# one, 0.7972158 vs 0.7972125 in the other), so each routes the gradient to
# a different maximum and the layers below agree to a few percent only.
# Every op was checked on its own (conv dx, batch-norm dx: 1e-6 relative);
# traced elementwise, layer by layer, the first difference is at a pool.
CHECK_TOL = {"vgg_step": 5e-2}


def check_case(worker, case):
    """Both sides on the same deterministic inputs: norms of the output and
    of every gradient must agree, or a fast wrong path would look good."""
    name, _, _, _, make = case
    r = worker.ask("check %s" % name)
    if not r.startswith("check "):
        return {"status": "n/a", "detail": r}
    ffv = [float(v) for v in r.split()[1:]]
    torch.set_num_threads(1)
    step, grads = make(mk_det, labels_det)
    y = step()
    tv = [float(y.detach().norm())] + [float(g.grad.norm()) if g.grad is not None else float("nan")
                                        for g in grads]
    worst = compare_checks(ffv, tv)
    status = "ok" if worst is not None and worst <= CHECK_TOL.get(name, 2e-3) else "DIFF"
    return {"status": status, "max_rel_diff": worst, "ff": ffv, "torch": tv}


# --------------------------------------------------------------- report ---

def fmt(v, spec, width):
    return ("%" + spec) % v if v is not None else "n/a".rjust(width)


def print_table(rows, ceiling, checks):
    hdr = ("%-31s %3s %9s %9s %7s %7s %6s %6s %6s %7s %7s %5s"
           % ("case", "thr", "ff ms", "torch ms", "omp/bl", "ff/tor", "target",
              "ff%cl", "to%cl", "ffRSS", "toRSS", "check"))
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        ceil = ceiling.get(r["threads"])
        ff_frac = to_frac = None
        if r["gflop"] and ceil and r["case"] != "sgemm_1024":
            if r["ff_ms"]:
                ff_frac = 100 * r["gflop"] / (r["ff_ms"] / 1e3) / ceil
            if r["torch_ms"]:
                to_frac = 100 * r["gflop"] / (r["torch_ms"] / 1e3) / ceil
        r["ff_ceiling_pct"], r["torch_ceiling_pct"] = ff_frac, to_frac
        ratio = r["ff_ms"] / r["torch_ms"] if r["ff_ms"] and r["torch_ms"] else None
        r["ratio"] = ratio
        chk = checks.get(r["case"], {}).get("status", "")
        print("%-31s %3d %9s %9s %7s %7s %6s %6s %6s %7s %7s %5s" % (
            r["label"][:31], r["threads"], fmt(r["ff_ms"], "9.3f", 9), fmt(r["torch_ms"], "9.3f", 9),
            r["torch_cfg"] or "", fmt(ratio, "7.2f", 7),
            ("<=%.1f" % r["target"]) if r["target"] else "", fmt(ff_frac, "5.0f%%", 6) if ff_frac else "",
            fmt(to_frac, "5.0f%%", 6) if to_frac else "",
            fmt(r.get("ff_rss_mib"), "7.0f", 7), fmt(r.get("torch_rss_mib"), "7.0f", 7), chk))
    for r in rows:
        if r["ff_status"] != "ok":
            print("  n/a %s (%d thr): %s" % (r["case"], r["threads"], r["ff_status"]))
    for name, c in checks.items():
        if c["status"] == "DIFF":
            print("  check %s: ff %s vs torch %s" % (name, c["ff"], c["torch"]))
        elif c["status"] == "n/a" and not c["detail"].startswith("unavailable"):
            print("  check %s: %s" % (name, c["detail"]))


def library_info(worker, blas):
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "unset"),
        "openblas_l2_size": os.environ.get("OPENBLAS_L2_SIZE", "unset"),
        "openblas_num_threads_env": os.environ.get("OPENBLAS_NUM_THREADS", "unset"),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS", "unset"),
        "torch_openblas": blas.path or "not loaded",
        "openblas_config": blas.config(),
        "openblas_core": blas.corename(),
        "torch_mkldnn": torch.backends.mkldnn.is_available(),
    }
    try:
        info["python3_torch_deb"] = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "python3-torch"],
            capture_output=True, text=True).stdout or "?"
    except OSError:
        info["python3_torch_deb"] = "?"
    cfg = torch.__config__.show()
    for key in ("BLAS_INFO", "LAPACK_INFO"):
        i = cfg.find(key + "=")
        info["torch_" + key.lower()] = cfg[i + len(key) + 1:].split(",")[0] if i >= 0 else "?"
    for line in cfg.splitlines():
        if "MKL-DNN" in line or "oneDNN" in line:
            info["torch_onednn"] = line.strip(" -")
        if "CPU capability usage:" in line:
            info["torch_cpu_capability"] = line.split(":", 1)[1].strip()
    info["torch_rss_after_import_mib"] = proc_status_kb("VmRSS") / 1024
    r = worker.ask("info")
    if r.startswith("info "):
        for kv in r.split()[1:]:
            k, _, v = kv.partition("=")
            info["ff_" + k] = v
    else:
        info["ff_info"] = r
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default=os.path.join(ROOT, "build/bench/ops.json"))
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    args = ap.parse_args()
    cases = [c for c in CASES if not args.cases or c[0] in args.cases.split(",")
             or c[0] == "sgemm_1024"]  # the ceiling is always measured

    blas = TorchBlas()
    worker = Worker()
    worker.start()
    info = library_info(worker, blas)
    info["loadavg_start"] = loadavg()
    t_start = time.time()

    print("bench_ops: Firefly vs PyTorch CPU, float32, forward+backward (incl. parameter grads), batch-first")
    print("  OPENBLAS_CORETYPE=%s  OPENBLAS_L2_SIZE=%s  (OpenBLAS core in use: %s)" % (
        info["openblas_coretype"], info["openblas_l2_size"], info["openblas_core"]))
    print("  firefly %s (%s) on %s, %s" % (info.get("ff_firefly", "?"), FIREFLY, info.get("ff_lua", "?"),
                                            info.get("ff_openblas", "?")))
    print("  torch %s (deb %s, python %s): BLAS %s -> %s; convolutions: %s; ATen CPU capability %s" % (
        info["torch"], info["python3_torch_deb"], info["python"], info["torch_blas_info"],
        info["torch_openblas"], info.get("torch_onednn", "?") if info["torch_mkldnn"] else "no oneDNN",
        info.get("torch_cpu_capability", "?")))
    print("  RSS at start: ff worker %.0f MiB, torch process %.0f MiB (after import torch)" % (
        float(info.get("ff_vmrss_kb", 0)) / 1024, info["torch_rss_after_import_mib"]))
    print("  %s; torch OpenBLAS threads settable: %s" % (info["openblas_config"],
                                                       "yes" if blas.lib else "no"))
    print("  %d timed repetitions per side after %d warm-up round(s)%s; medians per step" % (
        REPS, WARMUP, " (BENCH_QUICK)" if QUICK else ""))
    print("  load average at start: %s%s" % (info["loadavg_start"], "  (busy machine: expect noise)"
                                              if busy(info["loadavg_start"]) else ""))
    print("  goals (issue 19; shown, not asserted): ff/torch <= 0.9 VGG step, VGG inference, conv2d; "
          "<= 0.8 MLP step; <= 1.0 linear, bn+relu; GEMM-bound rows >= 80% of the ceiling")
    sys.stdout.flush()

    checks = {}
    for case in cases:
        if case[0] != "sgemm_1024":
            checks[case[0]] = check_case(worker, case)
    rows = []
    for case in cases:
        for n in THREADS:
            rows.append(measure_case(worker, blas, case, n))
            print("  measured %-16s %d thr: ff %s ms, torch %s ms" % (
                case[0], n, fmt(rows[-1]["ff_ms"], ".3f", 0), fmt(rows[-1]["torch_ms"], ".3f", 0)),
                file=sys.stderr, flush=True)
    worker.quit()

    ceiling = {}
    for r in rows:
        if r["case"] == "sgemm_1024" and r["ff_ms"]:
            ceiling[r["threads"]] = r["gflop"] / (r["ff_ms"] / 1e3)
    print()
    print("ceiling (engine sgemm 1024^3 via ff.matmul): " + ", ".join(
        "%d thr %.1f GFLOP/s" % (n, g) for n, g in sorted(ceiling.items())))
    print("FLOP counts:")
    for note in FLOP_NOTES:
        print("  " + note)
    print("ff/tor: ff ms / torch ms, lower is better; torch ms is the fastest torch omp/blas thread config;")
    print("%cl: GFLOP/s as % of the ceiling at that thread count; RSS: peak MiB of each process during the case")
    print()
    print_table(rows, ceiling, checks)
    elapsed = time.time() - t_start
    info["loadavg_end"] = loadavg()
    print("\n(%.0f s; load average at the end: %s)" % (elapsed, info["loadavg_end"]))

    out = {"meta": dict(info, repetitions=REPS, warmup=WARMUP, quick=QUICK,
                        ceiling_gflops=ceiling, flop_notes=FLOP_NOTES, seconds=elapsed,
                        targets={c[0]: c[3] for c in CASES if c[3]}),
           "rows": rows, "checks": checks}
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1, default=str)


if __name__ == "__main__":
    main()
