#!/usr/bin/env python3
"""Times tremble's classifier against ONNX Runtime (and optionally PyTorch) on the same model.

Run through scripts/compare-peers.sh, which makes the environment and builds the Rust harness
(examples/peer_harness.rs). The ONNX graph is written by hand from the safetensors weights, so
no torch is needed for it; the optional PyTorch module is built from the same weights. All
fp32 runtimes get the same seeded inputs, must agree on the calibrated scores within --bound,
and are then timed back to back in rounds, with the same thread count. A reduced-precision
tremble path (bf16, int8) is held to --reduced-bound on the scores and, to count as the best path, to
a dev ROC AUC loss within --auc-loss, read from the committed `tremble eval` reports.

Progress goes to stderr; stdout carries the report, whose last two lines are the throughput
ratios tremble/onnxruntime at batch 32x128 (fp32, and the fastest tremble path that counts).
"""
import argparse
import json
import logging
import math
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "peers"
REPORT = ROOT / "reports" / "tmp" / "compare-peers.json"

CLS, SEP, PAD = 101, 102, 0
# Timed shapes: (case, windows, tokens per window, kind). Latency cases take 10x the repeats
# of the throughput case so that their p99 rests on enough calls.
CASES = [
    ("b1x64", 1, 64, "latency"),
    ("b1x128", 1, 128, "latency"),
    ("b32x128", 32, 128, "throughput"),
]
THROUGHPUT_CASE = "b32x128"
# Lengths of the padded agreement batches: the shortest possible window ([CLS] [SEP]), odd
# lengths and full windows, so every batch pads most rows.
PADDED_BATCHES = [[2, 17, 128, 64, 5, 100, 33, 128], [3, 64, 50, 11], [127, 9, 128]]
GEMM_SHAPE = (4096, 384, 1536)


def log(msg):
    print(f"compare-peers: {msg}", file=sys.stderr, flush=True)


def die(msg):
    print(f"compare-peers: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------
# Model


def load_model(model_dir):
    """Weights (f32 numpy, base overridden by the model's files), config and calibration."""
    import numpy as np
    from safetensors.numpy import load_file

    manifest_path = model_dir / "tremble.json"
    if not manifest_path.is_file():
        die(f"no model at {model_dir} (tremble.json missing): run scripts/setup.sh")
    manifest = json.loads(manifest_path.read_text())
    base_dir = (model_dir / manifest["base"]["dir"]).resolve()
    for name in ("config.json", "model.safetensors"):
        if not (base_dir / name).is_file():
            die(f"base encoder file {base_dir / name} missing: run scripts/setup.sh")
    cfg = json.loads((base_dir / "config.json").read_text())
    if cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu":
        die(f"{base_dir}: expected a BERT encoder with erf GELU, got {cfg.get('model_type')}")

    weights = {}
    files = [base_dir / "model.safetensors"]
    files += [model_dir / n for n in manifest["files"] if n.endswith(".safetensors")]
    for f in files:
        for k, v in load_file(str(f)).items():
            # Some exports of the same encoder name it under a `bert.` prefix.
            weights[k.removeprefix("bert.")] = v.astype(np.float32) if v.dtype != np.int64 else v
    for k in ("head.hidden.weight", "head.attack.weight"):
        if k not in weights:
            die(f"{model_dir}: {k} missing; this comparison needs a model with a hidden head layer")
    cal = manifest["calibration"]
    return weights, cfg, (float(cal["a"]), float(cal["b"]))


def matmul_flops(cfg, tokens, head_hidden):
    """Matmul FLOPs (2*m*n*k each) of one window of `tokens` tokens: encoder and attack head.

    The category head tremble also runs (3 outputs) is left out: the peers do not compute it,
    and it is under 0.001% of the total."""
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    t = tokens
    projections = 4 * 2 * t * h * h  # Q, K, V, attention output
    ffn = 2 * 2 * t * h * inter
    attention = 2 * 2 * t * t * h  # QK^T and PV over all heads: heads * t * t * head_dim each
    head = 2 * h * head_hidden + 2 * head_hidden * 1
    return layers * (projections + ffn + attention) + head


# ---------------------------------------------------------------------------------------------
# ONNX export by hand


def build_onnx(weights, cfg, calibration):
    """The classifier as an fp32 ONNX graph (opset 17): input_ids, attention_mask -> score [B].

    The ops follow the pattern of the Hugging Face BERT export (MatMul+Add projections,
    Reshape/Transpose heads, Div by sqrt(d), additive mask, erf GELU, LayerNormalization) so
    that ONNX Runtime's transformer fusions can recognise them."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    head_dim = h // heads
    eps = float(cfg["layer_norm_eps"])
    nodes, inits = [], []
    counter = [0]

    def name(prefix):
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(value, prefix="c", dtype=np.float32):
        n = name(prefix)
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), n))
        return n

    def node(op, inputs, prefix=None, **attrs):
        out = name(prefix or op.lower())
        nodes.append(helper.make_node(op, inputs, [out], name=out + "_node", **attrs))
        return out

    def weight(key, transpose=False):
        w = weights[key]
        # Linear weights are [out, in]; MatMul wants [in, out].
        return const(np.ascontiguousarray(w.T) if transpose else w, key)

    def linear(x, prefix):
        mm = node("MatMul", [x, weight(prefix + ".weight", transpose=True)])
        return node("Add", [mm, weight(prefix + ".bias")])

    def layer_norm(x, prefix):
        return node(
            "LayerNormalization",
            [x, weight(prefix + ".weight"), weight(prefix + ".bias")],
            axis=-1,
            epsilon=eps,
        )

    def gelu(x):
        d = node("Div", [x, const(math.sqrt(2.0))])
        e = node("Erf", [d])
        a = node("Add", [e, const(1.0)])
        m = node("Mul", [x, a])
        return node("Mul", [m, const(0.5)])

    ids, mask = "input_ids", "attention_mask"
    i64 = np.int64

    # Embeddings; token types are all 0, so their embedding is one constant row.
    word = node("Gather", [weight("embeddings.word_embeddings.weight"), ids], axis=0)
    shape = node("Shape", [ids])
    seq = node("Gather", [shape, const(1, dtype=i64)], axis=0)
    positions = node("Range", [const(0, dtype=i64), seq, const(1, dtype=i64)])
    pos = node("Gather", [weight("embeddings.position_embeddings.weight"), positions], axis=0)
    tt = const(weights["embeddings.token_type_embeddings.weight"][0], "token_type_0")
    x = node("Add", [node("Add", [word, pos]), tt])
    x = layer_norm(x, "embeddings.LayerNorm")

    # Additive attention mask [B, 1, 1, T]: 0 on tokens, -10000 on padding (as in BERT).
    # Two single-axis Unsqueezes, as the export emits, is the form the attention fusion
    # recognises as a mask.
    m2 = node("Unsqueeze", [mask, const([1], dtype=i64)])
    m4 = node("Unsqueeze", [m2, const([2], dtype=i64)])
    mf = node("Cast", [m4], to=TensorProto.FLOAT)
    mask_bias = node("Mul", [node("Sub", [const(1.0), mf]), const(-10000.0)])

    split_shape = const([0, 0, heads, head_dim], dtype=i64)
    merge_shape = const([0, 0, h], dtype=i64)
    scale = const(math.sqrt(head_dim))
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q = node("Reshape", [linear(x, f"{p}.attention.self.query"), split_shape])
        k = node("Reshape", [linear(x, f"{p}.attention.self.key"), split_shape])
        v = node("Reshape", [linear(x, f"{p}.attention.self.value"), split_shape])
        q = node("Transpose", [q], perm=[0, 2, 1, 3])
        k = node("Transpose", [k], perm=[0, 2, 3, 1])
        v = node("Transpose", [v], perm=[0, 2, 1, 3])
        s = node("Div", [node("MatMul", [q, k]), scale])
        probs = node("Softmax", [node("Add", [s, mask_bias])], axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, merge_shape])
        a = linear(ctx, f"{p}.attention.output.dense")
        x = layer_norm(node("Add", [a, x]), f"{p}.attention.output.LayerNorm")
        f = gelu(linear(x, f"{p}.intermediate.dense"))
        o = linear(f, f"{p}.output.dense")
        x = layer_norm(node("Add", [o, x]), f"{p}.output.LayerNorm")

    # Masked mean over tokens.
    m3 = node("Cast", [node("Unsqueeze", [mask, const([2], dtype=i64)])], to=TensorProto.FLOAT)
    axis1 = const([1], dtype=i64)
    summed = node("ReduceSum", [node("Mul", [x, m3]), axis1], keepdims=0)
    count = node("Max", [node("ReduceSum", [m3, axis1], keepdims=0), const(1e-9)])
    pooled = node("Div", [summed, count])

    z = gelu(linear(pooled, "head.hidden"))
    logit = node("Squeeze", [linear(z, "head.attack"), const([1], dtype=i64)])
    a_cal, b_cal = calibration
    cal = node("Add", [node("Mul", [logit, const(a_cal)]), const(b_cal)])
    nodes.append(helper.make_node("Sigmoid", [cal], ["score"], name="score_node"))

    graph = helper.make_graph(
        nodes,
        "tremble_classifier",
        [
            helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info(mask, TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="compare_peers"
    )
    # IR 8 is the version that goes with opset 17; newer IRs gain nothing here.
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def fuse_with_transformers_optimizer(src, dst, cfg):
    """ONNX Runtime's offline BERT fusion (onnxruntime.transformers.optimizer). Returns the
    fused-operator counts, or None when the optimizer cannot run here."""
    try:
        from onnxruntime.transformers import optimizer
    except Exception as e:  # noqa: BLE001 - any import failure means: skip this variant
        log(f"onnxruntime.transformers.optimizer unavailable ({e}); skipping the fused graph")
        return None
    # It warns that the producer is not PyTorch; the fusion counts below say what matched.
    logging.getLogger("onnxruntime.transformers.optimizer").setLevel(logging.ERROR)
    opt = optimizer.optimize_model(
        str(src),
        model_type="bert",
        num_heads=cfg["num_attention_heads"],
        hidden_size=cfg["hidden_size"],
        opt_level=0,  # the offline pass only; the session applies its own at load
        use_gpu=False,
    )
    opt.save_model_to_file(str(dst))
    return {k: v for k, v in opt.get_fused_operator_statistics().items() if v}


def op_histogram(path):
    import onnx

    counts = {}
    for n in onnx.load(str(path), load_external_data=False).graph.node:
        key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


# ---------------------------------------------------------------------------------------------
# Inputs


def make_inputs(seed):
    rng = random.Random(seed)

    def window(n):
        return [CLS] + [rng.randrange(1000, 29000) for _ in range(n - 2)] + [SEP]

    cases = {name: [window(t) for _ in range(b)] for name, b, t, _ in CASES}
    agreement = [cases[name] for name, _, _, _ in CASES]
    agreement += [[window(n) for n in lengths] for lengths in PADDED_BATCHES]
    return {"agreement": agreement, "cases": cases}


def pad(batch):
    import numpy as np

    t = max(len(w) for w in batch)
    ids = np.full((len(batch), t), PAD, dtype=np.int64)
    mask = np.zeros((len(batch), t), dtype=np.int64)
    for i, w in enumerate(batch):
        ids[i, : len(w)] = w
        mask[i, : len(w)] = 1
    return ids, mask


# ---------------------------------------------------------------------------------------------
# Runtimes: each scores batches and times named cases, returning per-call seconds.


class OrtRuntime:
    def __init__(self, label, path, threads, inputs):
        import onnxruntime as ort

        self.label, self.path = label, "fp32"
        self.session = ort.InferenceSession(
            str(path), ort_options(threads), providers=["CPUExecutionProvider"]
        )
        self.feeds = {}
        for name, windows in inputs["cases"].items():
            ids, mask = pad(windows)
            self.feeds[name] = {"input_ids": ids, "attention_mask": mask}

    def score(self, batch):
        ids, mask = pad(batch)
        out = self.session.run(["score"], {"input_ids": ids, "attention_mask": mask})[0]
        return [float(s) for s in out]

    def time(self, case, n):
        feeds, run = self.feeds[case], self.session.run
        lat = []
        for _ in range(n):
            start = time.perf_counter()
            run(["score"], feeds)
            lat.append(time.perf_counter() - start)
        return lat


def ort_options(threads, optimized_path=None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    return so


class TorchRuntime:
    def __init__(self, weights, cfg, calibration, threads, inputs):
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass  # only settable before torch's first parallel work; the default is harmless
        self.torch = torch
        self.label, self.path = "pytorch", "fp32"
        self.model = torch_classifier(weights, cfg, calibration)
        self.feeds = {}
        for name, windows in inputs["cases"].items():
            ids, mask = pad(windows)
            self.feeds[name] = (torch.from_numpy(ids), torch.from_numpy(mask))

    def score(self, batch):
        ids, mask = pad(batch)
        with self.torch.inference_mode():
            out = self.model(self.torch.from_numpy(ids), self.torch.from_numpy(mask))
        return [float(s) for s in out]

    def time(self, case, n):
        ids, mask = self.feeds[case]
        lat = []
        with self.torch.inference_mode():
            for _ in range(n):
                start = time.perf_counter()
                self.model(ids, mask)
                lat.append(time.perf_counter() - start)
        return lat


def torch_classifier(weights, cfg, calibration):
    """The classifier as an eager PyTorch module on the same weights (fp32). Defined inside a
    function so that torch is imported only with --torch."""
    import torch
    import torch.nn.functional as F

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = {
                k: torch.from_numpy(v.copy()) for k, v in weights.items() if v.dtype.kind == "f"
            }
            self.h = cfg["hidden_size"]
            self.heads = cfg["num_attention_heads"]
            self.layers = cfg["num_hidden_layers"]
            self.eps = float(cfg["layer_norm_eps"])
            self.a, self.b = calibration

        def lin(self, x, p):
            return F.linear(x, self.w[p + ".weight"], self.w[p + ".bias"])

        def ln(self, x, p):
            return F.layer_norm(x, (self.h,), self.w[p + ".weight"], self.w[p + ".bias"], self.eps)

        def forward(self, ids, mask):
            w, (b, t) = self.w, ids.shape
            x = (
                w["embeddings.word_embeddings.weight"][ids]
                + w["embeddings.position_embeddings.weight"][:t]
                + w["embeddings.token_type_embeddings.weight"][0]
            )
            x = self.ln(x, "embeddings.LayerNorm")
            bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * -10000.0
            d = self.h // self.heads
            for i in range(self.layers):
                p = f"encoder.layer.{i}"

                def split(y):
                    return y.view(b, t, self.heads, d).transpose(1, 2)

                q = split(self.lin(x, f"{p}.attention.self.query"))
                k = split(self.lin(x, f"{p}.attention.self.key"))
                v = split(self.lin(x, f"{p}.attention.self.value"))
                ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
                ctx = ctx.transpose(1, 2).reshape(b, t, self.h)
                a = self.lin(ctx, f"{p}.attention.output.dense")
                x = self.ln(a + x, f"{p}.attention.output.LayerNorm")
                f = F.gelu(self.lin(x, f"{p}.intermediate.dense"))
                x = self.ln(self.lin(f, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
            m = mask[:, :, None].to(x.dtype)
            pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
            z = F.gelu(self.lin(pooled, "head.hidden"))
            logit = self.lin(z, "head.attack").squeeze(-1)
            return torch.sigmoid(self.a * logit + self.b)

    return Classifier().eval()


class TrembleRuntime:
    """The Rust harness in --serve mode: it loads the model once and times cases on request."""

    def __init__(self, harness, model_dir, inputs_path, precision, threads, batch_size):
        self.label, self.path = "tremble", precision
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        cmd = [
            str(harness), "--model", str(model_dir), "--inputs", str(inputs_path),
            "--path", precision, "--batch-size", str(batch_size), "--serve",
        ]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
        )
        header = self._reply()
        if header.get("threads") != threads:
            die(f"tremble harness runs {header.get('threads')} threads, expected {threads}")
        self.scores = header["scores"]

    def _reply(self):
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            die(f"tremble harness ({self.path}) exited with status {code} (its error is above)")
        return json.loads(line)

    def score_all(self):
        return self.scores

    def time(self, case, n):
        self.proc.stdin.write(f"time {case} {n}\n")
        self.proc.stdin.flush()
        return self._reply()["latencies_s"]

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


# ---------------------------------------------------------------------------------------------
# Measurement


class ForeignCpu:
    """CPU time that processes other than this script and its harnesses take while it times:
    on a small shared machine, the first suspect when numbers move. Linux only (/proc);
    elsewhere it reports nothing."""

    def __init__(self, pids):
        self.pids = pids
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.start = self._sample()

    def _sample(self):
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
            # user nice system idle iowait irq softirq steal: busy leaves out idle and iowait
            busy = sum(fields[:3]) + sum(fields[5:7])
            ours = 0
            for pid in self.pids:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read().rsplit(")", 1)[1].split()
                ours += int(stat[11]) + int(stat[12])  # utime, stime
            return busy, ours, fields[7] if len(fields) > 7 else 0, time.perf_counter()
        except (OSError, ValueError, IndexError):
            return None

    def cores(self):
        """(foreign busy cores, stolen cores) averaged since construction, or None."""
        end = self._sample()
        if self.start is None or end is None:
            return None
        secs = end[3] - self.start[3]
        foreign = (end[0] - self.start[0]) - (end[1] - self.start[1])
        return max(foreign, 0) / self.tick / secs, (end[2] - self.start[2]) / self.tick / secs



def gemm_rate(threads, runs):
    """GFLOP/s of one fp32 MatMul [4096,384]x[384,1536] in ONNX Runtime with `threads`
    threads: the machine's practical GEMM ceiling at this model's shapes."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = GEMM_SHAPE
    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])],
        [b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ort.InferenceSession(
        model.SerializeToString(), ort_options(threads), providers=["CPUExecutionProvider"]
    )
    a = rng.standard_normal((m, k), dtype=np.float32)
    # Into a preallocated output: a fresh 25 MB result per call costs page faults that would
    # make this "ceiling" a third lower than what the model's smaller matmuls reach.
    c = np.empty((m, n), dtype=np.float32)
    binding = sess.io_binding()
    binding.bind_cpu_input("a", a)
    binding.bind_output("c", "cpu", 0, np.float32, [m, n], c.ctypes.data)
    for _ in range(3):
        sess.run_with_iobinding(binding)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run_with_iobinding(binding)
        times.append(time.perf_counter() - start)
    t = statistics.median(times)
    return 2 * m * n * k / t / 1e9, t


def time_all(runtimes, cases, warmup, rounds):
    """Per runtime and case, the per-call latencies. Runtimes take turns within each case, in
    rotating order, `rounds` times; each turn starts with one discarded call so that the
    previous runtime's idle-spinning threads and cold caches fall on a call that is not kept."""
    results = {rt_key(rt): {} for rt in runtimes}
    for case, n in cases:
        for rt in runtimes:
            rt.time(case, warmup)
        per_round = [n // rounds + (1 if r < n % rounds else 0) for r in range(rounds)]
        for r, count in enumerate(per_round):
            order = runtimes[r % len(runtimes):] + runtimes[: r % len(runtimes)]
            for rt in order:
                rt.time(case, 1)
                results[rt_key(rt)].setdefault(case, []).extend(rt.time(case, count))
        log(f"timed {case} ({n} calls per runtime)")
    return results


def source_state():
    """The commit the harness was built from, `-dirty` when the tree had edits."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def rt_key(rt):
    return f"{rt.label}/{rt.path}"


def percentile(xs, q):
    xs = sorted(xs)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def max_delta(a, b):
    return max(abs(x - y) for xa, xb in zip(a, b, strict=True) for x, y in zip(xa, xb, strict=True))


# ---------------------------------------------------------------------------------------------


def dev_auc(path):
    """(ROC AUC, data file, n) of a committed `tremble eval` report, or None."""
    try:
        r = json.loads(path.read_text())
        return r["auc"], r["data"], r["n_attack"] + r["n_benign"]
    except (OSError, KeyError, ValueError):
        return None


def reduced_path_ok(path, model_dir, delta, args):
    """Whether a reduced-precision path may count as the best one, and why (not)."""
    if delta > args.reduced_bound:
        return False, f"scores differ from fp32 by {delta:.1e} > --reduced-bound {args.reduced_bound}"
    reports = ROOT / "reports" / model_dir.name
    base, mine = dev_auc(reports / "dev-english-only" / "report.json"), dev_auc(
        reports / f"dev-{path}" / "report.json")
    if base is None or mine is None:
        return False, (f"no dev reports to compare (run tremble eval --no-route with and without "
                       f"--precision {path} into reports/{model_dir.name}/dev-{path} and "
                       f"dev-english-only)")
    if base[1:] != mine[1:]:
        return False, f"dev reports on different data ({base[1:]} vs {mine[1:]})"
    loss = base[0] - mine[0]
    why = (f"scores within {delta:.1e} of fp32; dev ROC AUC {mine[0]:.4f} vs fp32 {base[0]:.4f} "
           f"(loss {loss:+.4f}, allowed {args.auc_loss})")
    return loss <= args.auc_loss, why


def default_paths():
    """fp32, plus the reduced-precision paths this CPU runs: bf16 needs AVX512-BF16 and int8
    AVX512-VNNI, as /proc/cpuinfo lists them."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    extra = [p for p, flag in (("bf16", "avx512_bf16"), ("int8", "avx512_vnni")) if flag in flags]
    return ",".join(["fp32"] + extra)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--harness", required=True, help="the built peer_harness binary")
    ap.add_argument(
        "--model", default=None, help="tremble model directory (default models/tremble-minilm-v1)"
    )
    ap.add_argument("--threads", type=int, default=2, help="threads of every runtime (default 2)")
    ap.add_argument(
        "--repeats", type=int, default=20,
        help="timed 32x128 batches per runtime (default 20); latency shapes get 10x as many calls",
    )
    ap.add_argument("--warmup", type=int, default=3, help="discarded calls per runtime and shape")
    ap.add_argument("--rounds", type=int, default=5, help="turns the runtimes take per shape")
    ap.add_argument(
        "--quick", action="store_true", help="a smoke test: --repeats 2 --warmup 1 --rounds 2"
    )
    ap.add_argument("--torch", action="store_true", help="also time PyTorch (eager, fp32)")
    ap.add_argument(
        "--paths", default=None,
        help="comma-separated tremble paths (peer_harness --path) to time (default fp32, "
        "bf16 when the CPU has AVX512-BF16, int8 when it has AVX512-VNNI)",
    )
    ap.add_argument("--bound", type=float, default=1e-3, help="largest |score difference| allowed")
    ap.add_argument(
        "--reduced-bound", type=float, default=0.2,
        help="largest |score difference| of a reduced-precision tremble path (bf16, int8) from the "
        "fp32 reference: a sanity bound that catches a broken path (int8 moves calibrated scores "
        "near the threshold by up to ~0.15); its accuracy is judged by a committed dev report "
        "within --auc-loss")
    ap.add_argument(
        "--auc-loss", type=float, default=0.002,
        help="largest dev ROC AUC loss of a reduced-precision path against fp32, read from "
        "reports/<model>/dev-<path>/report.json and reports/<model>/dev-english-only/report.json")
    ap.add_argument("--no-fused", action="store_true",
                    help="skip the graph fused offline by onnxruntime.transformers.optimizer")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    if sys.version_info < (3, 10):
        die(f"python 3.10 or newer is needed (this is {sys.version.split()[0]})")
    if args.quick:
        args.repeats, args.warmup, args.rounds = 2, 1, 2
    if args.threads < 1 or args.repeats < 1 or args.rounds < 1:
        die("--threads, --repeats and --rounds must be at least 1")
    args.rounds = min(args.rounds, args.repeats)
    if args.paths is None:
        args.paths = default_paths()
    paths = [p for p in args.paths.split(",") if p]
    if "fp32" not in paths:
        die("--paths must include fp32, the path the others are held to")
    harness = Path(args.harness)
    if not harness.is_file():
        die(f"harness {harness} not built: run scripts/compare-peers.sh, which builds it")
    model_dir = Path(args.model).resolve() if args.model else ROOT / "models" / "tremble-minilm-v1"

    # Only the torch runtime's OpenMP pool reads these; set before torch is imported.
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import numpy as np  # noqa: F401 - fail early with the venv hint below
    import onnxruntime as ort

    if args.torch:
        try:
            import torch
        except ImportError:
            die("torch is not installed in this environment: run scripts/compare-peers.sh --torch")

    wall = time.perf_counter()
    CACHE.mkdir(parents=True, exist_ok=True)
    weights, cfg, calibration = load_model(model_dir)
    head_hidden = weights["head.hidden.weight"].shape[0]

    inputs = make_inputs(args.seed)
    inputs_path = CACHE / "inputs.json"
    inputs_path.write_text(json.dumps(inputs))

    onnx_path = CACHE / f"{model_dir.name}.fp32.onnx"
    import onnx

    onnx.save(build_onnx(weights, cfg, calibration), str(onnx_path))
    log(f"wrote {onnx_path.relative_to(ROOT)} "
        f"(onnxruntime {ort.__version__}, onnx {onnx.__version__})")

    # What ONNX Runtime's own optimizer (ORT_ENABLE_ALL) makes of each graph at load.
    graphs = [("onnxruntime", onnx_path, None)]
    if not args.no_fused:
        fused_path = CACHE / f"{model_dir.name}.fp32.fused.onnx"
        stats = fuse_with_transformers_optimizer(onnx_path, fused_path, cfg)
        if stats is not None:
            graphs.append(("onnxruntime-fused", fused_path, stats))
    fusion_notes = []
    for label, path, stats in graphs:
        dumped = CACHE / f"{path.stem}.session-optimized.onnx"
        ort.InferenceSession(
            str(path), ort_options(args.threads, dumped), providers=["CPUExecutionProvider"]
        )
        ops = op_histogram(dumped)
        note = f"{label}: session graph ops {ops}"
        if stats is not None:
            note = f"{label}: transformers optimizer fused {stats}; " + note[len(label) + 2 :]
        fusion_notes.append(note)
        log(note)

    runtimes = [OrtRuntime(label, path, args.threads, inputs) for label, path, _ in graphs]
    if args.torch:
        runtimes.append(TorchRuntime(weights, cfg, calibration, args.threads, inputs))
    trembles = []
    for p in paths:
        trembles.append(
            TrembleRuntime(harness, model_dir, inputs_path, p, args.threads, 32)
        )

    # Agreement, before any timing. ONNX Runtime on the plain graph is the reference.
    reference = [runtimes[0].score(b) for b in inputs["agreement"]]
    # The others are held to the reference on the same padded batches; the reference itself is
    # held to its own unpadded scores, so that a mask ignored the same way everywhere shows.
    alone = [[runtimes[0].score([w])[0] for w in b] for b in inputs["agreement"]]
    pad_delta = max_delta(alone, reference)
    log(f"padding: onnxruntime/fp32 padded vs unpadded max |dscore| {pad_delta:.2e}")
    if pad_delta > args.bound:
        for rt in trembles:
            rt.close()
        die(f"the reference's scores change with padding by {pad_delta:.3e} (bound {args.bound}): "
            "the exported graph's attention mask or pooling is wrong")
    deltas, failures = {}, []
    for rt in runtimes[1:] + trembles:
        if isinstance(rt, TrembleRuntime):
            scores = rt.score_all()
        else:
            scores = [rt.score(b) for b in inputs["agreement"]]
        deltas[rt_key(rt)] = max_delta(scores, reference)
    n_windows = sum(len(b) for b in inputs["agreement"])
    for key, d in deltas.items():
        ok = d <= args.bound
        log(f"agreement {key} vs onnxruntime/fp32: max |dscore| {d:.2e} over {n_windows} windows "
            f"({'ok' if ok else 'OVER the bound ' + str(args.bound)})")
        # Any fp32 runtime over the bound means a broken comparison, and nothing is timed; a
        # reduced-precision tremble path is held to --reduced-bound and its dev AUC instead.
        if not ok and key.endswith("/fp32"):
            failures.append(f"{key}: {d:.3e}")
    if failures:
        for rt in trembles:
            rt.close()
        die(f"scores disagree beyond {args.bound} with onnxruntime: {'; '.join(failures)}")
    deltas[rt_key(runtimes[0])] = 0.0

    gemm_runs = 5 if args.quick else 15
    gemm_gflops, gemm_t = gemm_rate(args.threads, gemm_runs)
    log(f"GEMM {GEMM_SHAPE}: {gemm_t * 1e3:.1f} ms median of {gemm_runs}, "
        f"{gemm_gflops:.1f} GFLOP/s")

    all_rts = trembles + runtimes
    cases = [(name, args.repeats * (10 if kind == "latency" else 1)) for name, _, _, kind in CASES]
    meter = ForeignCpu([os.getpid()] + [rt.proc.pid for rt in trembles])
    results = time_all(all_rts, cases, args.warmup, args.rounds)
    foreign = meter.cores()
    gemm_after, _ = gemm_rate(args.threads, gemm_runs)
    for rt in trembles:
        rt.close()
    if foreign is None:
        foreign_note = "CPU use of other processes unknown (no /proc)."
    else:
        foreign_note = (f"Other processes used {foreign[0]:.2f} cores on average while timing "
                        f"(hypervisor steal {foreign[1]:.2f}).")
        if foreign[0] > 0.1 or foreign[1] > 0.1:
            log(f"warning: {foreign_note} The timings share the CPU with them.")

    # Report.
    tokens = {name: (b, t) for name, b, t, _ in CASES}
    b_thr, t_thr = tokens[THROUGHPUT_CASE]
    flops_128 = matmul_flops(cfg, t_thr, head_hidden)
    flops_64 = matmul_flops(cfg, 64, head_hidden)
    rows, summary = [], {}
    for rt in all_rts:
        key = rt_key(rt)
        r = results[key]
        thr = statistics.median(r[THROUGHPUT_CASE])
        s = {
            "p50_64_ms": statistics.median(r["b1x64"]) * 1e3,
            "p99_64_ms": percentile(r["b1x64"], 0.99) * 1e3,
            "p50_128_ms": statistics.median(r["b1x128"]) * 1e3,
            "p99_128_ms": percentile(r["b1x128"], 0.99) * 1e3,
            "batch_s": thr,
            "seq_per_s": b_thr / thr,
            "tokens_per_s": b_thr * t_thr / thr,
            "gflops": b_thr * flops_128 / thr / 1e9,
            "delta": deltas[key],
        }
        s["gemm_frac"] = s["gflops"] / gemm_gflops
        summary[key] = s
        delta = "reference" if rt is runtimes[0] else f"{s['delta']:.1e}"
        rows.append(
            f"| {rt.label} | {rt.path} | {s['p50_64_ms']:.2f} | {s['p99_64_ms']:.2f} "
            f"| {s['p50_128_ms']:.2f} | {s['p99_128_ms']:.2f} | {s['batch_s']:.3f} "
            f"| {s['seq_per_s']:.1f} | {s['tokens_per_s']:.0f} | {s['gflops']:.1f} "
            f"| {100 * s['gemm_frac']:.0f}% | {delta} |"
        )

    ort_keys = [rt_key(rt) for rt in runtimes if rt.label.startswith("onnxruntime")]
    best_ort = min(ort_keys, key=lambda k: summary[k]["batch_s"])
    eligible = {}
    for rt in trembles:
        key = rt_key(rt)
        if key == "tremble/fp32":
            eligible[key] = (deltas[key] <= args.bound, "fp32, within --bound")
        else:
            eligible[key] = reduced_path_ok(rt.path, model_dir, deltas[key], args)
    ok_trembles = [k for k, (ok, _) in eligible.items() if ok]
    best_tremble = min(ok_trembles, key=lambda k: summary[k]["batch_s"])

    n_lat = args.repeats * 10
    print(f"## tremble vs peers: {model_dir.name}, {args.threads} threads, "
          f"{os.cpu_count()} CPUs, seed {args.seed}, tree {source_state()}")
    print()
    print(f"Model: {flops_64 / 1e9:.3f} GFLOP per 64-token window, {flops_128 / 1e9:.3f} GFLOP "
          f"per 128-token window (matmuls of encoder and attack head, 2*m*n*k).")
    print(f"Machine GEMM rate: {gemm_gflops:.1f} GFLOP/s (onnxruntime MatMul "
          f"{GEMM_SHAPE[0]}x{GEMM_SHAPE[1]} @ {GEMM_SHAPE[1]}x{GEMM_SHAPE[2]}, "
          f"{args.threads} threads, median of {gemm_runs}; {gemm_after:.1f} after the timings).")
    print(f"Calls: {n_lat} per latency shape, {args.repeats} batches of 32x128, per runtime, in "
          f"{args.rounds} interleaved rounds after {args.warmup} warmup calls. {foreign_note}")
    print()
    print("| runtime | path | 1x64 p50 ms | 1x64 p99 ms | 1x128 p50 ms | 1x128 p99 ms "
          "| 32x128 s/batch | seq/s | tokens/s | GFLOP/s | of GEMM | max abs dscore vs ref |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row)
    print()
    for note in fusion_notes:
        print(f"- {note}")
    print()
    print("Ratios (latency: time tremble/peer, lower is better for tremble; "
          "throughput: seq/s tremble/peer, higher is better for tremble):")
    t32 = summary["tremble/fp32"]
    peers = ort_keys + (["pytorch/fp32"] if args.torch else [])
    for peer in peers:
        p = summary[peer]
        print(f"- tremble vs {peer}: latency 1x64 p50 {t32['p50_64_ms'] / p['p50_64_ms']:.2f}, "
              f"1x128 p50 {t32['p50_128_ms'] / p['p50_128_ms']:.2f}; "
              f"throughput 32x128 {p['batch_s'] / t32['batch_s']:.2f}")
    if len(ort_keys) > 1:
        print(f"- onnxruntime in the last lines: {best_ort} (the faster onnxruntime graph)")
    for key, (ok, why) in eligible.items():
        print(f"- {key} {'counts' if ok else 'does not count'} for the best ratio: {why}")

    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps({
        "threads": args.threads, "seed": args.seed, "repeats": args.repeats,
        "rounds": args.rounds, "warmup": args.warmup, "gemm_gflops": [gemm_gflops, gemm_after],
        "flops_per_window": {"64": flops_64, "128": flops_128}, "deltas": deltas,
        "summary": summary, "latencies_s": results, "fusion": fusion_notes,
        "foreign_cores": foreign,
    }, indent=1) + "\n")
    log(f"raw latencies in {REPORT.relative_to(ROOT)}; "
        f"wall time {time.perf_counter() - wall:.0f} s")

    ort_batch = summary[best_ort]["batch_s"]
    print(f"fp32 throughput ratio tremble/onnxruntime (batch 32x128): "
          f"{ort_batch / t32['batch_s']:.2f}")
    print(f"best throughput ratio tremble/onnxruntime (batch 32x128): "
          f"{ort_batch / summary[best_tremble]['batch_s']:.2f}")


if __name__ == "__main__":
    main()
