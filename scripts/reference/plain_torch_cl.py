#!/usr/bin/env python3
"""Plain-PyTorch reference runs of retain's continual-learning setups.

An independent implementation, in plain PyTorch (python stdlib + torch; numpy is seeded when
it is installed but never needed), of the Permuted-MNIST and Split-MNIST streams and of the
naive, EWC, experience-replay and LwF methods as retain defines them. It shares no code with
retain, so its accuracies are what the PyTorch world gets for the same setup: a comparison
point for retain's own numbers. Random draws (permutations, subsamples, shuffles, reservoir
decisions, initial weights) follow retain's *semantics*, not its random numbers, so the two
agree in distribution over seeds, not run by run.

Usage:
    python scripts/reference/plain_torch_cl.py --data DIR --setup permuted --method naive \\
        --seeds 0 1 2 3 4 --tasks 10 --train-samples-per-task 1000 --lr 0.1

Output: one JSON object per seed, on its own stdout line:
    {"setup", "method", "seed", "readout", "matrix", "initial", "acc",
     "<readout>": {"matrix", "initial", "acc"}, ..., "config", "seconds"}
``matrix[i][j]`` is the accuracy (fraction in [0, 1]) on task j after training task i (rows
1..T), ``initial`` the untrained model's row, ``acc`` the mean of the last row. The top-level
``matrix``/``initial``/``acc`` are those of the primary read-out named by ``readout``
(``domain_il`` for permuted, ``class_il`` for split); every read-out of the setup also has its
own object (``domain_il`` for permuted; ``class_il`` and ``task_il`` for split). A seed
whose mean training loss of an epoch is not finite stops there, as retain's trainer does: its
line has ``"diverged": true``, an ``error`` message and ``"matrix"``/``"acc"`` null (the other
seeds still run; the exit status stays 0). Otherwise ``"diverged"`` is false.

Data
----
MNIST from the IDX files in ``--data`` (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each plain or with ``.gz``). Pixels are
``x / 255``, normalised as ``(x - 0.1307) / 0.3081``, flattened to 784 values. The whole
dataset is loaded once as float tensors; batches are index selections (no DataLoader).

* ``permuted``: T tasks (default 10). Every task, the first included, is the MNIST training
  set under its own uniform random pixel permutation ``p`` (output pixel j is input pixel
  ``p[j]``, i.e. ``x[:, p]``), subsampled to N random training samples per task (default
  1000; all 60 000 with ``--train-samples-per-task 0``), chosen independently per task.
  Evaluation: the full 10 000-sample test set under the task's permutation (M random test
  samples per task with ``--test-samples-per-task M``). One shared 10-way head; read-out
  ``domain_il`` = arg-max over all 10 classes.
* ``split``: 5 tasks of 2 classes, (0,1), (2,3), (4,5), (6,7), (8,9). A task's training set is
  every training image of its classes (or N random ones), its test set every test image of
  its classes (or M random ones). Single 10-way head; read-outs ``class_il`` (arg-max over all
  10 classes) and ``task_il`` (arg-max over the evaluated task's own classes, the other
  logits masked).

Model and training
------------------
MLP 784 -> hidden... -> 10 (default hidden 100 100), ReLU between layers, ``nn.Linear`` with
PyTorch's default initialisation, built right after ``torch.manual_seed(seed)``. Per task:
E epochs (default 1) over the task's training samples, reshuffled every epoch, batches of B
(default 10; the last partial batch is kept). One optimiser for the whole run: plain SGD (no
momentum, no weight decay; lr default 0.1 for permuted, 0.01 for split) or
``torch.optim.Adam`` with its defaults but lr (default 0.001 when ``--lr`` is not given).
Training loss ``--loss class_il`` (default): cross-entropy over all 10 outputs; ``--loss
task_il``: cross-entropy over the current task's classes only (other logits excluded from the
softmax, which equals remapping the labels onto the task's classes). For permuted every task
has all 10 classes, so both losses coincide. After every task (and once before training) every
task is evaluated, model in eval mode, without gradients.

Methods (retain's definitions and defaults)
-------------------------------------------
* ``naive``: plain fine-tuning.
* ``ewc`` (separate penalties, Kirkpatrick et al. 2017): after each task, the diagonal
  empirical Fisher ``F_i = (1/N) sum_n (d log p(y_n|x_n) / d theta_i)^2`` over
  N = ``--fisher-samples`` (default 1000; all when the task has fewer) random training samples
  of the finished task, one backward pass per sample, true labels, model in eval mode,
  log-softmax over the same classes as the training loss; (F_t, theta*_t) is stored per task.
  Later tasks minimise ``CE + lambda/2 * sum_t sum_i F_t,i (theta_i - theta*_t,i)^2``
  (``--lambda``, default 100). As in retain, the penalty's gradient
  ``lambda * sum_t F_t (theta - theta*_t)`` is added to the gradients in closed form after
  ``backward`` (here as ``lambda * (F_sum * theta - sum_t F_t theta*_t)``, constant cost per
  step whatever the number of tasks).
* ``replay``: a reservoir (Vitter's algorithm R over every sample seen, one decision per
  sample in batch order) of ``--buffer-size`` samples (default 500). Each step draws
  ``--replay-batch-size`` (default 10) distinct samples uniformly from the buffer (fewer while
  it holds fewer, none while it is empty), concatenates them with the current batch and takes
  one cross-entropy over the concatenation (mean over all rows); the current batch then
  enters the reservoir (the replay batch is drawn before it does). A stored sample is replayed
  under the permutation of the task it came from.
* ``lwf``: from the second task on, a frozen copy of the model as it left the previous task;
  loss ``CE(z, y) + alpha * T^2 * (1/B) sum_b KL(softmax(z°_O / T) || softmax(z_O / T))`` with
  O the classes of all earlier tasks, softmaxed among themselves (``--alpha`` default 1,
  ``--temperature`` default 2). For permuted, every earlier task has all 10 classes, so O is
  all 10 logits (retain concatenates the earlier tasks' class lists, all 10 classes repeated
  once per task; repeating every logit k times leaves the KL unchanged, so this is the same
  loss).

With ``--loss task_il`` every cross-entropy is over each sample's own task's classes (the
other logits set to -inf before the softmax), as retain's ``[training] loss = "task_il"``:
* naive and EWC: the training loss over the current task's classes;
* EWC: the Fisher's log-likelihood over the finished task's classes;
* replay: each row of the concatenated batch (current and replayed) over the classes of the
  task it belongs to (stored with it in the buffer);
* LwF: the CE term over the current task's classes; the distillation term is unchanged.

Randomness: ``torch.manual_seed(seed)`` before the model is built; ``random`` (and numpy when
present) seeded with the seed; every stream and method draw (permutations, subsamples,
shuffles, Fisher samples, reservoir, replay draws) comes from its own ``torch.Generator``
seeded from (seed, purpose), so a seed's run is reproducible and every method sees the same
tasks and orders for the same seed. ``--threads`` (default 1) sets ``torch.set_num_threads``.
"""

import argparse
import copy
import gzip
import hashlib
import json
import os
import random
import struct
import sys
import time
import warnings

# torch warns on import when numpy is absent; nothing here needs it.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
NUM_CLASSES = 10
SPLIT_TASKS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]


# ----------------------------------------------------------------------------------------
# Data


def read_idx(directory, name):
    """The array of IDX file `name` (plain or `.gz`) in `directory`, as a uint8 tensor."""
    path = os.path.join(directory, name)
    if os.path.exists(path):
        with open(path, "rb") as f:
            raw = f.read()
    elif os.path.exists(path + ".gz"):
        with gzip.open(path + ".gz", "rb") as f:
            raw = f.read()
    else:
        sys.exit(f"missing {path} (or {path}.gz)")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        sys.exit(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    data = torch.frombuffer(bytearray(raw[4 + 4 * ndim :]), dtype=torch.uint8)
    return data.view(*dims)


def load_mnist(directory):
    """(train_x, train_y, test_x, test_y): x `[N, 784]` float32 normalised, y int64."""

    def images(name):
        x = read_idx(directory, name)
        x = x.reshape(x.shape[0], -1).to(torch.float32) / 255.0
        return (x - MNIST_MEAN) / MNIST_STD

    def labels(name):
        return read_idx(directory, name).to(torch.int64)

    return (
        images("train-images-idx3-ubyte"),
        labels("train-labels-idx1-ubyte"),
        images("t10k-images-idx3-ubyte"),
        labels("t10k-labels-idx1-ubyte"),
    )


# ----------------------------------------------------------------------------------------
# Randomness


def generator(seed, purpose):
    """A torch.Generator seeded from the run seed and a purpose string."""
    digest = hashlib.sha256(f"{seed}/{purpose}".encode()).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return g


def subsample(indices, limit, seed, purpose):
    """`limit` random entries of `indices` (ascending), or all of them when `limit` is None
    or not smaller."""
    if limit is None or limit >= len(indices):
        return indices
    order = torch.randperm(len(indices), generator=generator(seed, purpose))[:limit]
    return indices[order].sort().values


# ----------------------------------------------------------------------------------------
# Stream


class Task:
    def __init__(self, index, classes, permutation, train_idx, test_idx):
        self.index = index
        self.classes = classes  # list of ints
        self.permutation = permutation  # LongTensor [784] or None
        self.train_idx = train_idx  # LongTensor into the training split
        self.test_idx = test_idx  # LongTensor into the test split
        self.mask = torch.zeros(NUM_CLASSES, dtype=torch.bool)
        self.mask[classes] = True
        self.test_cache = None

    def inputs(self, x, idx):
        rows = x.index_select(0, idx)
        if self.permutation is None:
            return rows
        # Output pixel j is input pixel permutation[j]; index_select is ~5x faster than
        # advanced indexing here.
        return rows.index_select(1, self.permutation)


def build_stream(args, data, seed):
    train_x, train_y, test_x, test_y = data
    n_train = args.train_samples_per_task or None
    n_test = args.test_samples_per_task or None
    tasks = []
    if args.setup == "permuted":
        pixels = train_x.shape[1]
        for t in range(args.tasks):
            perm = torch.randperm(pixels, generator=generator(seed, f"permutation/task{t}"))
            train_idx = subsample(
                torch.arange(train_x.shape[0]), n_train, seed, f"subsample/train/task{t}"
            )
            test_idx = subsample(
                torch.arange(test_x.shape[0]), n_test, seed, f"subsample/test/task{t}"
            )
            tasks.append(Task(t, list(range(NUM_CLASSES)), perm, train_idx, test_idx))
    else:
        for t, classes in enumerate(SPLIT_TASKS[: args.tasks]):
            cls = torch.tensor(classes)
            train_all = torch.isin(train_y, cls).nonzero().flatten()
            test_all = torch.isin(test_y, cls).nonzero().flatten()
            train_idx = subsample(train_all, n_train, seed, f"subsample/train/task{t}")
            test_idx = subsample(test_all, n_test, seed, f"subsample/test/task{t}")
            tasks.append(Task(t, list(classes), None, train_idx, test_idx))
    return tasks


# ----------------------------------------------------------------------------------------
# Model, losses, evaluation


def mlp(hidden):
    layers, width = [], 28 * 28
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, NUM_CLASSES))
    return nn.Sequential(*layers)


def masked(logits, mask):
    """Logits with the entries outside `mask` (`[10]` or `[B, 10]`, bool) set to -inf."""
    return logits.masked_fill(~mask, float("-inf"))


def cross_entropy(logits, labels, mask=None):
    """Mean cross-entropy over all outputs, or over the classes in `mask` only."""
    return F.cross_entropy(logits if mask is None else masked(logits, mask), labels)


@torch.no_grad()
def evaluate(model, tasks, data, readouts, eval_batch=10000):
    """Per read-out, the accuracy on every task."""
    _, _, test_x, test_y = data
    model.eval()
    result = {r: [] for r in readouts}
    for task in tasks:
        if task.test_cache is None:
            # The task's test inputs (under its permutation) and labels, built once per run.
            task.test_cache = (
                task.inputs(test_x, task.test_idx),
                test_y.index_select(0, task.test_idx),
            )
        inputs, targets = task.test_cache
        correct = {r: 0 for r in readouts}
        for start in range(0, len(targets), eval_batch):
            logits = model(inputs[start : start + eval_batch])
            labels = targets[start : start + eval_batch]
            for r in readouts:
                z = masked(logits, task.mask) if r == "task_il" else logits
                correct[r] += (z.argmax(1) == labels).sum().item()
        for r in readouts:
            result[r].append(correct[r] / len(task.test_idx))
    model.train()
    return result


# ----------------------------------------------------------------------------------------
# Methods


class Naive:
    def __init__(self, args, model, seed, tasks):
        self.args, self.model, self.seed, self.tasks = args, model, seed, tasks

    def before_task(self, task, train_x, train_y):
        pass

    def loss(self, task, x, y, mask):
        return cross_entropy(self.model(x), y, mask)

    def after_backward(self):
        pass

    def after_task(self, task, train_x, train_y):
        pass


class Ewc(Naive):
    def __init__(self, args, model, seed, tasks):
        super().__init__(args, model, seed, tasks)
        self.params = [p for p in model.parameters()]
        self.fisher_sum = None  # sum_t F_t, per parameter
        self.weighted_anchor = None  # sum_t F_t * theta*_t, per parameter

    def after_backward(self):
        if self.fisher_sum is None:
            return
        lam = self.args.lam
        with torch.no_grad():
            for p, f, fa in zip(self.params, self.fisher_sum, self.weighted_anchor):
                # d/dtheta of lambda/2 sum_t F_t (theta - theta*_t)^2
                p.grad.add_(f * p - fa, alpha=lam)

    def after_task(self, task, train_x, train_y):
        n = len(train_y)
        chosen = torch.arange(n)
        if self.args.fisher_samples < n:
            gen = generator(self.seed, f"ewc/fisher/task{task.index}")
            chosen = torch.randperm(n, generator=gen)[: self.args.fisher_samples].sort().values
        mask = task.mask if self.args.loss == "task_il" else None
        fisher = [torch.zeros_like(p) for p in self.params]
        self.model.eval()
        for i in chosen.tolist():
            logits = self.model(train_x[i : i + 1])
            nll = cross_entropy(logits, train_y[i : i + 1], mask)
            grads = torch.autograd.grad(nll, self.params)
            for f, g in zip(fisher, grads):
                f.add_(g.square())
        self.model.train()
        count = float(len(chosen))
        with torch.no_grad():
            fisher = [f / count for f in fisher]
            weighted = [f * p.detach() for f, p in zip(fisher, self.params)]
            if self.fisher_sum is None:
                self.fisher_sum, self.weighted_anchor = fisher, weighted
            else:
                self.fisher_sum = [a + b for a, b in zip(self.fisher_sum, fisher)]
                self.weighted_anchor = [a + b for a, b in zip(self.weighted_anchor, weighted)]


class Replay(Naive):
    def __init__(self, args, model, seed, tasks):
        super().__init__(args, model, seed, tasks)
        cap = args.buffer_size
        self.capacity = cap
        self.x = torch.zeros(cap, 28 * 28)
        self.y = torch.zeros(cap, dtype=torch.int64)
        self.mask = torch.zeros(cap, NUM_CLASSES, dtype=torch.bool)
        self.seen = 0
        self.reservoir_rng = generator(seed, "replay/reservoir")
        self.draw_rng = generator(seed, "replay/draw")

    def filled(self):
        return min(self.seen, self.capacity)

    def add(self, x, y, task):
        for b in range(x.shape[0]):
            n = self.seen
            self.seen += 1
            if n < self.capacity:
                slot = n
            else:
                slot = torch.randint(n + 1, (1,), generator=self.reservoir_rng).item()
                if slot >= self.capacity:
                    continue
            self.x[slot] = x[b]
            self.y[slot] = y[b]
            self.mask[slot] = task.mask

    def loss(self, task, x, y, mask):
        filled = self.filled()
        if filled == 0:
            loss = cross_entropy(self.model(x), y, mask)
        else:
            take = min(self.args.replay_batch_size, filled)
            slots = torch.randperm(filled, generator=self.draw_rng)[:take]
            xs = torch.cat([x, self.x[slots]])
            ys = torch.cat([y, self.y[slots]])
            rows_mask = None
            if mask is not None:
                rows_mask = torch.cat([mask.expand(x.shape[0], -1), self.mask[slots]])
            loss = cross_entropy(self.model(xs), ys, rows_mask)
        # The replay batch was drawn before this batch entered the buffer.
        self.add(x, y, task)
        return loss


class Lwf(Naive):
    def __init__(self, args, model, seed, tasks):
        super().__init__(args, model, seed, tasks)
        self.teacher = None
        self.old = None

    def before_task(self, task, train_x, train_y):
        if task.index == 0:
            self.teacher = None
            return
        self.teacher = copy.deepcopy(self.model).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        old = sorted({c for t in self.tasks[: task.index] for c in t.classes})
        self.old = torch.tensor(old)

    def loss(self, task, x, y, mask):
        logits = self.model(x)
        ce = cross_entropy(logits, y, mask)
        if self.teacher is None:
            return ce
        temperature = self.args.temperature
        with torch.no_grad():
            old = self.teacher(x).index_select(1, self.old)
        new = logits.index_select(1, self.old)
        log_p = F.log_softmax(old / temperature, dim=1)
        log_q = F.log_softmax(new / temperature, dim=1)
        kl = (log_p.exp() * (log_p - log_q)).sum(1).mean()
        return ce + self.args.alpha * temperature * temperature * kl


METHODS = {"naive": Naive, "ewc": Ewc, "replay": Replay, "lwf": Lwf}


# ----------------------------------------------------------------------------------------
# Run


def run_seed(args, data, seed):
    started = time.time()
    random.seed(seed)
    try:
        import numpy

        numpy.random.seed(seed)
    except ImportError:
        pass
    train_x, train_y, _, _ = data
    tasks = build_stream(args, data, seed)
    readouts = ["domain_il"] if args.setup == "permuted" else ["class_il", "task_il"]

    torch.manual_seed(seed)
    model = mlp(args.hidden)
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    method = METHODS[args.method](args, model, seed, tasks)

    initial = evaluate(model, tasks, data, readouts)
    rows = {r: [] for r in readouts}
    model.train()
    for task in tasks:
        # The task's training samples, under its permutation, as one tensor.
        x_task = task.inputs(train_x, task.train_idx)
        y_task = train_y.index_select(0, task.train_idx)
        mask = task.mask if args.loss == "task_il" else None
        method.before_task(task, x_task, y_task)
        n = len(y_task)
        for epoch in range(args.epochs):
            loss_sum = torch.zeros(())
            shuffle = generator(seed, f"shuffle/task{task.index}/epoch{epoch}")
            order = torch.randperm(n, generator=shuffle)
            for start in range(0, n, args.batch_size):
                idx = order[start : start + args.batch_size]
                loss = method.loss(task, x_task[idx], y_task[idx], mask)
                optimizer.zero_grad(set_to_none=False)
                loss.backward()
                method.after_backward()
                optimizer.step()
                loss_sum += loss.detach()
            if not torch.isfinite(loss_sum):
                # As retain's trainer: a non-finite mean epoch loss ends the run as diverged.
                steps = -(-n // args.batch_size)
                message = (
                    f"training diverged: mean loss {loss_sum.item() / steps} "
                    f"in task {task.index}, epoch {epoch}"
                )
                print(f"seed {seed}: {message}", file=sys.stderr)
                return {
                    "setup": args.setup, "method": args.method, "seed": seed,
                    "readout": readouts[0], "diverged": True, "error": message,
                    "matrix": None, "initial": initial[readouts[0]], "acc": None,
                    "config": config_of(args), "seconds": round(time.time() - started, 3),
                }
        method.after_task(task, x_task, y_task)
        accuracy = evaluate(model, tasks, data, readouts)
        for r in readouts:
            rows[r].append(accuracy[r])

    out = {
        "setup": args.setup, "method": args.method, "seed": seed, "readout": readouts[0],
        "diverged": False,
    }
    for r in readouts:
        last = rows[r][-1]
        out[r] = {"matrix": rows[r], "initial": initial[r], "acc": sum(last) / len(last)}
    out["matrix"] = out[readouts[0]]["matrix"]
    out["initial"] = out[readouts[0]]["initial"]
    out["acc"] = out[readouts[0]]["acc"]
    out["config"] = config_of(args)
    out["seconds"] = round(time.time() - started, 3)
    return out


def config_of(args):
    keys = [
        "tasks", "train_samples_per_task", "test_samples_per_task", "hidden", "epochs",
        "batch_size", "lr", "optimizer", "loss",
    ]
    if args.method == "ewc":
        keys += ["lam", "fisher_samples"]
    elif args.method == "replay":
        keys += ["buffer_size", "replay_batch_size"]
    elif args.method == "lwf":
        keys += ["alpha", "temperature"]
    config = {k: getattr(args, k) for k in keys}
    if "lam" in config:
        config["lambda"] = config.pop("lam")
    return config


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Plain-PyTorch reference runs of Permuted- and Split-MNIST "
        "(naive, EWC, replay, LwF); one JSON line per seed on stdout."
    )
    p.add_argument("--data", required=True, help="directory of the MNIST IDX files")
    p.add_argument("--setup", required=True, choices=["permuted", "split"])
    p.add_argument("--method", required=True, choices=sorted(METHODS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--tasks", type=int, default=None,
                   help="number of tasks (default 10 for permuted, 5 for split)")
    p.add_argument("--train-samples-per-task", type=int, default=None,
                   help="training samples per task (default 1000 for permuted, all for "
                   "split; 0 = all)")
    p.add_argument("--test-samples-per-task", type=int, default=None,
                   help="test samples per task (default all)")
    p.add_argument("--hidden", type=int, nargs="*", default=[100, 100])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--lr", type=float, default=None,
                   help="default 0.1 (permuted) / 0.01 (split) with SGD, 0.001 with Adam")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--loss", choices=["class_il", "task_il"], default="class_il")
    p.add_argument("--lambda", dest="lam", type=float, default=100.0)
    p.add_argument("--fisher-samples", type=int, default=1000)
    p.add_argument("--buffer-size", type=int, default=500)
    p.add_argument("--replay-batch-size", type=int, default=10)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    if args.tasks is None:
        args.tasks = 10 if args.setup == "permuted" else len(SPLIT_TASKS)
    if args.setup == "split" and not 1 <= args.tasks <= len(SPLIT_TASKS):
        p.error(f"split has at most {len(SPLIT_TASKS)} tasks")
    if args.train_samples_per_task is None and args.setup == "permuted":
        args.train_samples_per_task = 1000
    if args.lr is None:
        if args.optimizer == "adam":
            args.lr = 0.001
        else:
            args.lr = 0.1 if args.setup == "permuted" else 0.01
    for name in ["epochs", "batch_size", "fisher_samples", "buffer_size", "replay_batch_size",
                 "threads"]:
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.temperature <= 0:
        p.error("--temperature must be > 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_mnist(args.data)
    for seed in args.seeds:
        print(json.dumps(run_seed(args, data, seed)), flush=True)


if __name__ == "__main__":
    main()
