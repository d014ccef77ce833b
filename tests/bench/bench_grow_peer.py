#!/usr/bin/python3
"""bench_grow_peer.py: one Firefly growth step, the engine (ff.grow.propose)
against a PyTorch program doing the same work, written here from the paper
(Wu et al., NeurIPS 2020).

The step, on the MLP 784-256-256-10 (ReLU) and 8 Fashion-MNIST batches of
128, with the paper preset (16 new-neuron candidates per hidden layer plus
a split candidate for every neuron, eps = 1e-2, Adam lr 1e-3 for one pass,
projection after each step, the midpoint rule on 2 points):

  over-grown forward, per unit (producer W, b; ReLU; consumer):
    z = x W^T + b (+ the previous unit's new neurons' output)
    split children  z +- s, s = (alpha + y_s) * (x v^T), averaged after ReLU
    new neurons     (alpha + y_n) * e * relu(x u^T + c), through o into the
                    consumer's output
  step 1: Adam on (v, u, c, o, e), gates y = 0, alpha = 1; after each batch
          rows of v to norm <= eps, |e| <= eps, ||(u_j, c_j, o_j)|| <= 1
  step 2: dL/dy for every gate, summed over the batches at alpha = 1/4 and
          3/4 and averaged: the candidates' gate gradients

The network, the batches and the initial perturbations come from the engine
(bench_grow_peer.lua export), so both sides start from the same numbers.
Before timing, the gate gradients of both sides must agree (relative to
each group's largest, 2e-2: Adam normalises each step, so float rounding in
a near-zero gradient moves a coordinate by up to lr; the check still
catches a wrong rule, sign or scale). Then both are timed interleaved, each
sample in a fresh engine process (the ff side times propose inside it,
after two untimed ones, wall and CPU), at 1 and 2 threads (torch: OpenMP threads = BLAS threads = n, and
the best of 1/2 and 2/1 at 2). Writes build/bench/grow_peer.json.
"""
import argparse, ctypes, json, os, struct, subprocess, sys, time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EPS, LR, POINTS = 1e-2, 1e-3, 2
GOAL = 0.7


def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        arr = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=np.float32).reshape(meta["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


def listed(t, key):
    i, out = 1, []
    while "%s.%d" % (key, i) in t:
        out.append(t["%s.%d" % (key, i)])
        i += 1
    return out


class Unit:
    """One hidden layer's candidates: split directions v, new neurons u, c, o, e, and gates."""
    def __init__(self, init):
        v, u, c, o, e = init
        self.v = v.clone().requires_grad_()
        self.u, self.c, self.o, self.e = (t.clone().requires_grad_() for t in (u, c, o, e))
        self.ys = torch.zeros(v.shape[0], requires_grad=True)
        self.yn = torch.zeros(u.shape[0], requires_grad=True)

    def params(self):
        return [self.v, self.u, self.c, self.o, self.e]


def unit_forward(un, x, W, b, extra, alpha):
    z = torch.nn.functional.linear(x, W, b)
    if extra is not None:
        z = z + extra
    s = torch.nn.functional.linear(x, un.v) * (un.ys + alpha)
    h = (torch.relu(z + s) + torch.relu(z - s)) * 0.5
    a = torch.relu(torch.nn.functional.linear(x, un.u, un.c)) * (un.e * (un.yn + alpha))
    return h, torch.nn.functional.linear(a, un.o)


def overgrown(units, net, x, alpha):
    W1, b1, W2, b2, W3, b3 = net
    h1, extra1 = unit_forward(units[0], x, W1, b1, None, alpha)
    h2, extra2 = unit_forward(units[1], h1, W2, b2, extra1, alpha)
    return torch.nn.functional.linear(h2, W3, b3) + extra2


@torch.no_grad()
def project(units):
    for un in units:
        rows = un.v
        rows.mul_(EPS / rows.norm(dim=1, keepdim=True).clamp(min=EPS))
        un.e.clamp_(-EPS, EPS)
        norm = (un.u.pow(2).sum(1) + un.c.pow(2) + un.o.pow(2).sum(0)).sqrt().clamp(min=1)
        un.u.div_(norm[:, None])
        un.c.div_(norm)
        un.o.div_(norm[None, :])


def growth_step(net, batches, init):
    """Step 1 and step 2; returns the mean gate gradients per unit and kind."""
    units = [Unit(init[0:5]), Unit(init[5:10])]
    opt = torch.optim.Adam([p for un in units for p in un.params()], lr=LR)
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(overgrown(units, net, x, 1.0), y).backward()
        opt.step()
        project(units)
    gates = [g for un in units for g in (un.ys, un.yn)]
    sums = [torch.zeros_like(g) for g in gates]
    count = 0
    for k in range(1, POINTS + 1):
        alpha = (2 * k - 1) / (2 * POINTS)
        for x, y in batches:
            for g in gates:
                g.grad = None
            torch.nn.functional.cross_entropy(overgrown(units, net, x, alpha), y).backward()
            for s, g in zip(sums, gates):
                s.add_(g.grad)
            count += 1
    names = ["1.split", "1.new", "2.split", "2.new"]
    return {n: (s / count).tolist() for n, s in zip(names, sums)}


def compare(ff, to, tol=2e-2):
    worst = 0.0
    for key, tv in to.items():
        fv = ff.get(key)
        if fv is None or len(fv) != len(tv):
            return float("inf")
        a, b = np.array(fv), np.array(tv)
        worst = max(worst, float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)))
    return worst


def blas_setter():
    for line in open("/proc/self/maps"):
        if "libopenblas" in line:
            lib = ctypes.CDLL(line.split()[-1])
            return lib.openblas_set_num_threads
    return None


def run_ff(firefly, path, threads, reps):
    out = subprocess.run([firefly, os.path.join(HERE, "bench_grow_peer.lua"), "run", path,
                          str(threads), str(reps)], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    quick = os.environ.get("BENCH_QUICK") == "1"
    ap.add_argument("--reps", type=int, default=int(os.environ.get("BENCH_GROW_REPS", "2" if quick else "5")))
    ap.add_argument("--json", default=os.path.join(ROOT, "build", "bench", "grow_peer.json"))
    args = ap.parse_args()
    firefly = os.environ.get("FIREFLY", os.path.join(ROOT, "firefly"))
    path = os.path.join(ROOT, "build", "bench", "grow_peer.safetensors")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    subprocess.run([firefly, os.path.join(HERE, "bench_grow_peer.lua"), "export", path], check=True,
                   capture_output=True, cwd=ROOT)
    t = load_safetensors(path)
    net = listed(t, "net")
    batches = [(x, y.long() - 1) for x, y in zip(listed(t, "x"), listed(t, "y"))]
    init = listed(t, "init")
    set_blas = blas_setter()

    print("bench_grow_peer: one Firefly growth step (paper preset, midpoint rule), MLP 784-256-256-10, "
          "8 batches of 128")
    print("  load average at start: %s" % " ".join(open("/proc/loadavg").read().split()[:3]))
    # the check, before any timing
    torch.set_num_threads(1)
    if set_blas:
        set_blas(1)
    ff_res = run_ff(firefly, path, 1, 0)
    to_eff = growth_step(net, batches, init)
    err = compare(ff_res["effects"], to_eff)
    status = "ok" if err <= 2e-2 else "DIFF"
    print("  gate gradients, engine vs torch: largest difference %.2e of each group's largest (%s)"
          % (err, status))
    rows = []
    for n in (1, 2):
        cfgs = [(1, 1)] if n == 1 else [(2, 2), (1, 2), (2, 1)]
        best = None
        for omp, bl in cfgs: # a short pre-pass picks torch's best configuration
            torch.set_num_threads(omp)
            if set_blas:
                set_blas(bl)
            growth_step(net, batches, init)
            t0 = time.perf_counter()
            growth_step(net, batches, init)
            dt = time.perf_counter() - t0
            if best is None or dt < best[0]:
                best = (dt, omp, bl)
        _, omp, bl = best
        torch.set_num_threads(omp)
        if set_blas:
            set_blas(bl)
        ff_wall, ff_cpu, to_wall, to_cpu = [], [], [], []
        for r in range(args.reps):
            order = ("ff", "torch") if r % 2 == 0 else ("torch", "ff")
            for side in order:
                if side == "ff":
                    res = run_ff(firefly, path, n, 1)
                    ff_wall.append(res["seconds"][0])
                    ff_cpu.append(res["cpu_seconds"][0])
                else:
                    t0, c0 = time.perf_counter(), time.process_time()
                    growth_step(net, batches, init)
                    to_wall.append(time.perf_counter() - t0)
                    to_cpu.append(time.process_time() - c0)
        med = lambda v: float(np.median(v))
        row = {"threads": n, "torch_cfg": "%d/%d" % (omp, bl), "ff_s": med(ff_wall), "torch_s": med(to_wall),
               "ff_cpu_s": med(ff_cpu), "torch_cpu_s": med(to_cpu), "ff_samples": ff_wall,
               "torch_samples": to_wall}
        row["ratio"] = row["ff_s"] / row["torch_s"]
        row["cpu_ratio"] = row["ff_cpu_s"] / row["torch_cpu_s"]
        rows.append(row)
    print("%-34s %3s %9s %9s %7s %7s %6s %9s %5s" % ("case", "thr", "ff ms", "torch ms", "omp/bl", "ff/tor",
                                                     "goal", "cpu ratio", "check"))
    for r in rows:
        print("%-34s %3d %9.1f %9.1f %7s %7.2f %6s %9.2f %5s" % (
            "Firefly growth step (MLP, paper)", r["threads"], 1e3 * r["ff_s"], 1e3 * r["torch_s"],
            r["torch_cfg"], r["ratio"], "<=%.1f" % GOAL, r["cpu_ratio"], status))
    print("  load average at the end: %s" % " ".join(open("/proc/loadavg").read().split()[:3]))
    with open(args.json, "w") as f:
        json.dump({"goal": GOAL, "check": {"status": status, "max_rel_diff": err,
                                           "ff": ff_res["effects"], "torch": to_eff},
                   "rows": rows, "reps": args.reps}, f)


if __name__ == "__main__":
    main()
