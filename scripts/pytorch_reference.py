#!/usr/bin/env python3
"""PyTorch's figures on this machine, for comparison with `batchnorm bench` and
`batchnorm train` (issues 3 and 4). Not part of the tests; needs `pip install torch numpy`.

    python3 scripts/pytorch_reference.py bench [--threads 2]
    python3 scripts/pytorch_reference.py train [--threads 2] [--steps 5000] [--seeds 1,2] [--bn with]

`bench` times BatchNorm train forward, eval forward and forward + backward (median of
repetitions after a warm-up) on the shapes of `batchnorm bench`, in both layouts, with
inputs rotated as `batchnorm bench` rotates them; `--rotate-outputs` rotates the outputs
too (as `batchnorm bench` does), where by default they come from PyTorch's allocator.
`train` trains the BN paper's network (784-100-100-100-10, sigmoid, LeCun init, batch 60,
plain SGD at learning rate 0.5) on Fashion-MNIST with and without BN before each sigmoid,
and prints steps/s and the final test accuracy (BN in eval mode), with BN's running
averages and, for the runs with BN, with population statistics recomputed over the
training set as `batchnorm train` does by default (`torch.optim.swa_utils.update_bn`):
    python3 scripts/pytorch_reference.py train --steps 50000 --seeds 1,2,3,4,5
`trajectory` trains that network once and writes its initial weights, mini-batches and
per-step losses to a folder; our network then trains from the same weights and batches
and compares its losses step by step:
    python3 scripts/pytorch_reference.py trajectory --steps 50000 [--bn without] [--out DIR]
    cargo run --release --example trajectory -- target/trajectory
"""
import argparse
import gzip
import json
import pathlib
import statistics
import time

import numpy as np
import torch

SHAPES = [(60, 100), (256, 4096), (4096, 1024), (32, 64, 56, 56), (128, 256, 14, 14), (256, 32, 28, 28)]


# Inputs are rotated among enough copies to exceed this many bytes, as `batchnorm bench`
# does, so that a tensor that fits in cache is not timed hot from the previous repetition.
ROTATE_BYTES = 96 << 20


def median_ms(fn, copies, budget=0.4, min_reps=10):
    """Median time of `fn(i)` in ms, `i` cycling through `0..copies`."""
    for i in range(3):
        fn(i % copies)
    times, start = [], time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < budget and len(times) < 2000):
        i = len(times) % copies
        t = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def bench(args):
    print(f"{'shape':16}{'layout':16}{'train ms':>10}{'eval ms':>10}{'fwd+bwd ms':>12}")
    for shape in SHAPES:
        layouts = ["channels_first"] + (["channels_last"] if len(shape) == 4 else [])
        for layout in layouts:
            c = shape[1]
            bn = torch.nn.BatchNorm1d(c) if len(shape) == 2 else torch.nn.BatchNorm2d(c)
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            copies = max(1, -(-ROTATE_BYTES // (4 * int(np.prod(shape)))))
            xs = [torch.randn(*shape).contiguous(memory_format=fmt) for _ in range(copies)]
            dys = [torch.randn(*shape).contiguous(memory_format=fmt) for _ in range(copies)]
            if args.rotate_outputs:
                train, evalf, fb = aten_times(shape, fmt, xs, dys, copies)
            else:
                train, evalf, fb = module_times(bn.to(memory_format=fmt), xs, dys, copies)
            name = "x".join(map(str, shape))
            print(f"{name:16}{layout:16}{train:10.4f}{evalf:10.4f}{fb:12.4f}", flush=True)


def module_times(bn, xs, dys, copies):
    """Through `nn.BatchNorm`, as a model runs it: outputs come from PyTorch's allocator,
    which hands the same (cached) memory back on every call."""
    bn.train()
    with torch.no_grad():
        train = median_ms(lambda i: bn(xs[i]), copies)
    bn.eval()
    with torch.no_grad():
        evalf = median_ms(lambda i: bn(xs[i]), copies)
    bn.train()
    for x in xs:
        x.requires_grad_(True)

    def fwd_bwd(i):
        y = bn(xs[i])
        y.backward(dys[i])
        xs[i].grad = None

    return train, evalf, median_ms(fwd_bwd, copies)


def aten_times(shape, fmt, xs, dys, copies):
    """Through the `out=` forms of ATen's kernels, writing outputs rotated as the inputs
    are, as `batchnorm bench` does."""
    c = shape[1]
    w, b, rm, rv = torch.ones(c), torch.zeros(c), torch.zeros(c), torch.ones(c)
    ys = [torch.empty_like(x) for x in xs]
    dxs = [torch.empty_like(x) for x in xs]
    for t in ys + dxs:
        t.fill_(1.0)
    mean, invstd = torch.empty(c), torch.empty(c)
    dw, db = torch.empty(c), torch.empty(c)
    fwd = torch.ops.aten.native_batch_norm.out
    bwd = torch.ops.aten.native_batch_norm_backward.out
    with torch.no_grad():
        def run(i, training):
            fwd(xs[i], w, b, rm, rv, training, 0.1, 1e-5, out=ys[i], save_mean=mean, save_invstd=invstd)

        def fwd_bwd(i):
            run(i, True)
            bwd(dys[i], xs[i], w, rm, rv, mean, invstd, True, 1e-5, [True, True, True],
                out0=dxs[i], out1=dw, out2=db)

        train = median_ms(lambda i: run(i, True), copies)
        evalf = median_ms(lambda i: run(i, False), copies)
        return train, evalf, median_ms(fwd_bwd, copies)


def idx(path):
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_train(d):
    images = torch.from_numpy(idx(f"{d}/train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255)
    labels = torch.from_numpy(idx(f"{d}/train-labels-idx1-ubyte.gz").astype(np.int64))
    return images, labels


def load_test(d):
    images = torch.from_numpy(idx(f"{d}/t10k-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255)
    labels = torch.from_numpy(idx(f"{d}/t10k-labels-idx1-ubyte.gz").astype(np.int64))
    return images, labels


def paper_network(use_bn, bias_before_bn=True):
    """784-100-100-100-10, sigmoid, LeCun init, BN before each sigmoid when `use_bn`."""
    layers, fan_in = [], 784
    for width in (100, 100, 100, 10):
        hidden = width != 10
        linear = torch.nn.Linear(fan_in, width, bias=bias_before_bn or not (use_bn and hidden))
        torch.nn.init.normal_(linear.weight, std=fan_in ** -0.5)  # LeCun
        if linear.bias is not None:
            torch.nn.init.zeros_(linear.bias)
        layers.append(linear)
        if hidden:
            layers += ([torch.nn.BatchNorm1d(width)] if use_bn else []) + [torch.nn.Sigmoid()]
        fan_in = width
    return torch.nn.Sequential(*layers)


def train(args):
    d = args.data
    images, labels = load_train(d)
    test_images, test_labels = load_test(d)
    warm = min(200, args.steps // 10)
    for seed in args.seeds:
        for use_bn in {"both": (True, False), "with": (True,), "without": (False,)}[args.bn]:
            torch.manual_seed(seed)
            model = paper_network(use_bn)
            opt = torch.optim.SGD(model.parameters(), lr=args.lr)
            loss_fn = torch.nn.CrossEntropyLoss()
            # The paper's draws: 60 training examples at random for every step.
            batches = torch.randint(0, images.shape[0], (args.steps, 60))
            model.train()
            for i in range(args.steps):
                if i == warm:
                    start = time.perf_counter()
                xb, yb = images[batches[i]], labels[batches[i]]
                opt.zero_grad(set_to_none=True)
                loss_fn(model(xb), yb).backward()
                opt.step()
            rate = (args.steps - warm) / (time.perf_counter() - start)
            accuracy = test_accuracy(model, test_images, test_labels)
            line = (f"seed {seed} {'with' if use_bn else 'without'} BN: {rate:.0f} steps/s "
                    f"(steps {warm}..{args.steps}), test accuracy {accuracy:.4f}")
            if use_bn:
                population_stats(model, images)
                line += f" (running), {test_accuracy(model, test_images, test_labels):.4f} (population)"
            print(line, flush=True)


def test_accuracy(model, test_images, test_labels):
    model.eval()
    with torch.no_grad():
        return (model(test_images).argmax(1) == test_labels).float().mean().item()


def population_stats(model, images, batch=60):
    """The paper's inference statistics, as `batchnorm train --eval-stats population`
    computes them: every BN layer's mean of batch means and mean of unbiased batch
    variances over the whole batches of the training set, in order."""
    whole = images.shape[0] // batch * batch
    torch.optim.swa_utils.update_bn(images[:whole].split(batch), model)


def trajectory(args):
    """Trains the paper's network (with BN unless `--bn without`; no bias before BN, as
    `batchnorm train` builds it) and writes its initial weights, batches and per-step
    losses and its final test accuracy to `--out`, for `cargo run --release --example
    trajectory -- DIR`, which trains our network from the same weights and batches and
    compares."""
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = load_train(args.data)
    use_bn = args.bn != "without"
    torch.manual_seed(args.seeds[0])
    model = paper_network(use_bn, bias_before_bn=False)
    with open(out / "init.f32", "wb") as f:
        for _, p in model.named_parameters():
            f.write(p.detach().numpy().astype("<f4").tobytes())
    batches = torch.randint(0, images.shape[0], (args.steps, 60))
    batches.numpy().astype("<u4").tofile(out / "batches.u32")
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    losses = []
    for i in range(args.steps):
        xb, yb = images[batches[i]], labels[batches[i]]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    np.array(losses, dtype="<f8").tofile(out / "losses.f64")
    test_images, test_labels = load_test(args.data)
    accuracy = test_accuracy(model, test_images, test_labels)
    meta = {"steps": args.steps, "batch": 60, "bn": use_bn, "lr": args.lr, "data": args.data,
            "test_accuracy": accuracy}
    if use_bn:
        population_stats(model, images)
        meta["test_accuracy_population"] = test_accuracy(model, test_images, test_labels)
    (out / "meta.json").write_text(json.dumps(meta))
    print(f"wrote {out}; now: cargo run --release --example trajectory -- {out}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["bench", "train", "trajectory"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=5000, help="train, trajectory: steps per run")
    p.add_argument("--lr", type=float, default=0.5, help="train, trajectory: learning rate")
    p.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[1],
                   help="train: comma-separated seeds, one run each (trajectory: the first)")
    p.add_argument("--bn", choices=["both", "with", "without"], default="both",
                   help="train: the network with BN, without, or both, one after the other "
                        "(trajectory: with BN unless `without`)")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--out", default="target/trajectory", help="trajectory: folder to write")
    p.add_argument("--rotate-outputs", action="store_true",
                   help="bench: write outputs rotated like the inputs, through ATen's out= kernels")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    {"bench": bench, "train": train, "trajectory": trajectory}[args.what](args)


if __name__ == "__main__":
    main()
