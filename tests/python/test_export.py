#!/usr/bin/env python3
"""test_export: networks exported by Firefly, opened by PyTorch and ONNX.

Run by tests/run.sh with Debian's python3 (python3-torch, python3-onnx,
installed by `make deps`); the product itself never needs Python.
make_exports.lua (run here through ./firefly) writes each case: an MLP
with batch norm, small VGGs, a network of every module type, and networks
grown by Firefly (splits, new neurons, inserted residual layers), exported
through the API or the `firefly export` command, with an input and our
eval-mode output. Checks:
  - tools/firefly_torch.py rebuilds each one; torch's output equals ours
    within 1e-5, and its state_dict keys are the exported names;
  - onnx.checker accepts each model.onnx, shape inference gives our output
    shape, its initializers equal the exported weights, and the graph run
    by a small evaluator over torch.nn.functional (onnx's own reference
    evaluator when this onnx has one) gives our output within 1e-5.
"""
import json
import math
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

import firefly_torch  # noqa: E402

TOL = 1e-5
FIXTURES = None
CASES = []


def setUpModule():
    global FIXTURES, CASES
    FIXTURES = tempfile.mkdtemp(prefix="ff_export_")
    subprocess.run([os.path.join(ROOT, "firefly"), "tests/python/make_exports.lua", FIXTURES],
                   cwd=ROOT, check=True)
    with open(os.path.join(FIXTURES, "cases.json")) as f:
        CASES = json.load(f)


def tearDownModule():
    subprocess.run(["rm", "-rf", FIXTURES], check=False)


def case_io(name):
    t = firefly_torch.read_safetensors(os.path.join(FIXTURES, name, "io.safetensors"))
    return t["input"], t["output"]


def max_diff(a, b):
    return (a - b).abs().max().item() if a.numel() else 0.0


# ---- a small ONNX evaluator over torch.nn.functional, for the ops export uses


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _sym_pads(pads):
    assert pads[:2] == pads[2:], "asymmetric pads %r" % (pads,)
    return tuple(pads[:2])


def _reshape(x, shape):
    shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape.tolist())]
    return x.reshape(shape)


def _flatten(x, axis):
    return x.reshape(math.prod(x.shape[:axis]), -1)


def _gemm(ins, a):
    x, w = ins[0], ins[1]
    if a.get("transA", 0):
        x = x.t()
    if a.get("transB", 0):
        w = w.t()
    y = a.get("alpha", 1.0) * (x @ w)
    if len(ins) > 2:
        y = y + a.get("beta", 1.0) * ins[2]
    return y


def _batchnorm(ins, a):
    x, scale, bias, mean, var = ins
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=a.get("epsilon", 1e-5))


OPS = {
    "Gemm": _gemm,
    "MatMul": lambda i, a: i[0] @ i[1],
    "Transpose": lambda i, a: i[0].permute(*a["perm"]),
    "Add": lambda i, a: i[0] + i[1],
    "Sub": lambda i, a: i[0] - i[1],
    "Mul": lambda i, a: i[0] * i[1],
    "Div": lambda i, a: i[0] / i[1],
    "Sqrt": lambda i, a: torch.sqrt(i[0]),
    "Exp": lambda i, a: torch.exp(i[0]),
    "Erf": lambda i, a: torch.erf(i[0]),
    "Relu": lambda i, a: F.relu(i[0]),
    "Tanh": lambda i, a: torch.tanh(i[0]),
    "Sigmoid": lambda i, a: torch.sigmoid(i[0]),
    "LeakyRelu": lambda i, a: F.leaky_relu(i[0], a.get("alpha", 0.01)),
    "Elu": lambda i, a: F.elu(i[0], a.get("alpha", 1.0)),
    "Softplus": lambda i, a: torch.logaddexp(i[0], torch.zeros_like(i[0])),
    "Identity": lambda i, a: i[0],
    "ReduceMean": lambda i, a: i[0].mean(dim=tuple(a["axes"]), keepdim=bool(a.get("keepdims", 1))),
    "Conv": lambda i, a: F.conv2d(i[0], i[1], i[2] if len(i) > 2 else None,
                                  stride=tuple(a["strides"]), padding=_sym_pads(a["pads"]),
                                  dilation=tuple(a["dilations"]), groups=a.get("group", 1)),
    "BatchNormalization": _batchnorm,
    "MaxPool": lambda i, a: F.max_pool2d(i[0], tuple(a["kernel_shape"]), tuple(a["strides"]),
                                         _sym_pads(a["pads"])),
    "AveragePool": lambda i, a: F.avg_pool2d(i[0], tuple(a["kernel_shape"]), tuple(a["strides"]),
                                             _sym_pads(a["pads"]),
                                             count_include_pad=bool(a.get("count_include_pad", 0))),
    "GlobalAveragePool": lambda i, a: i[0].mean(dim=(2, 3), keepdim=True),
    "Flatten": lambda i, a: _flatten(i[0], a.get("axis", 1)),
    "Reshape": lambda i, a: _reshape(i[0], i[1]),
}


def run_onnx(model, x):
    values = {init.name: torch.from_numpy(numpy_helper.to_array(init).copy())
              for init in model.graph.initializer}
    values[model.graph.input[0].name] = x
    for node in model.graph.node:
        if node.op_type not in OPS:
            raise AssertionError("the test's evaluator has no rule for %s" % node.op_type)
        values[node.output[0]] = OPS[node.op_type]([values[n] for n in node.input], _attrs(node))
    return values[model.graph.output[0].name]


def run_reference(path, x):
    try:
        from onnx.reference import ReferenceEvaluator  # onnx >= 1.13
    except ImportError:
        return None
    return torch.from_numpy(ReferenceEvaluator(path).run(None, {"input": x.numpy()})[0])


# ---- the tests, one set per case


class TestTorch(unittest.TestCase):
    def check(self, name):
        x, ours = case_io(name)
        d = os.path.join(FIXTURES, name, "torch")
        net = firefly_torch.load(d)
        self.assertFalse(net.training)
        with torch.no_grad():
            y = net(x)
        self.assertEqual(tuple(y.shape), tuple(ours.shape))
        self.assertLessEqual(max_diff(y, ours), TOL, "%s: torch output differs from ours" % name)
        # state_dict keys are the names export wrote (plus torch's BN counters)
        with open(os.path.join(d, "architecture.json")) as f:
            arch = json.load(f)
        names = set()

        def walk(node):
            for t in node["tensors"]:
                names.add(t["name"])
            for c in node.get("children", []):
                walk(c)
        walk(arch["model"])
        keys = {k for k in net.state_dict() if not k.endswith("num_batches_tracked")}
        self.assertEqual(keys, names)


class TestOnnx(unittest.TestCase):
    def check(self, name):
        x, ours = case_io(name)
        path = os.path.join(FIXTURES, name, "onnx", "model.onnx")
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        self.assertGreaterEqual(model.opset_import[0].version, 13)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        dims = inferred.graph.output[0].type.tensor_type.shape.dim
        self.assertEqual(len(dims), ours.dim())
        self.assertEqual(dims[0].dim_param, "batch")
        self.assertEqual([d.dim_value for d in dims[1:]], list(ours.shape[1:]))
        # every exported weight is an initializer with the same values
        weights = firefly_torch.read_safetensors(
            os.path.join(FIXTURES, name, "torch", "model.safetensors"))
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        for k, t in weights.items():
            self.assertIn(k, inits)
            self.assertTrue(torch.equal(torch.from_numpy(inits[k].copy()), t), k)
        # the graph computes our function
        with torch.no_grad():
            y = run_onnx(model, x)
        self.assertEqual(tuple(y.shape), tuple(ours.shape))
        self.assertLessEqual(max_diff(y, ours), TOL, "%s: ONNX graph output differs" % name)
        ref = run_reference(path, x)
        if ref is not None:
            self.assertLessEqual(max_diff(ref, ours), TOL)


class TestCoverage(unittest.TestCase):
    def test_every_module_type_is_exercised(self):
        seen = set()
        for c in CASES:
            seen.update(c["modules"])
        self.assertEqual(set(firefly_torch._BUILDERS) - seen, set())

    def test_grown_cases_present(self):
        grown = [c for c in CASES if c["grown"]]
        self.assertEqual(len(grown), 2)
        for c in grown:
            self.assertIn("Residual", c["modules"])

    def test_loader_refuses_unknown_type(self):
        with self.assertRaisesRegex(ValueError, "unknown type 'Foo'"):
            firefly_torch.build({"type": "Foo", "path": "3"})

    def test_loader_refuses_other_format(self):
        d = os.path.join(FIXTURES, "bad_format")
        os.makedirs(d)
        with open(os.path.join(d, "architecture.json"), "w") as f:
            json.dump({"format": "other"}, f)
        with self.assertRaisesRegex(ValueError, "format 'other'"):
            firefly_torch.load(d)


CASE_NAMES = ["mlp", "vgg", "vgg_gap", "zoo", "grown_mlp", "grown_vgg"]
for _n in CASE_NAMES:
    setattr(TestTorch, "test_" + _n, lambda self, n=_n: self.check(n))
    setattr(TestOnnx, "test_" + _n, lambda self, n=_n: self.check(n))


class TestCases(unittest.TestCase):
    def test_case_list(self):
        self.assertEqual([c["name"] for c in CASES], CASE_NAMES)


def main():
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    result = unittest.TextTestRunner(verbosity=1).run(suite)
    failed = len(result.failures) + len(result.errors)
    passed = result.testsRun - failed - len(result.skipped)
    print("test_export: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
