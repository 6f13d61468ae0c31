"""Plain PyTorch reference for retain's training step: the same model, batch and optimizer.

MLP 784-100-100-10, SGD (lr 0.01), cross-entropy, batches gathered by index from MNIST-shaped
uint8 data resident on the device and normalised per batch, one step = gather + forward +
backward + update. Like retain, it never reads the loss back inside the loop. Prints the mean
time per step over `--steps` steps after `--warmup` steps, synchronising the device only
around the timed region.

    python benches/torch_step.py --device cuda --batch 10 --steps 6000
"""
import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=12000)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    images = torch.randint(0, 256, (args.samples, 784), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (args.samples,), device=device)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 100), torch.nn.ReLU(),
        torch.nn.Linear(100, 100), torch.nn.ReLU(),
        torch.nn.Linear(100, 10),
    ).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scale, shift = 1.0 / (255.0 * 0.3081), -0.1307 / 0.3081

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def run(steps: int) -> float:
        order = torch.randperm(args.samples, device=device)
        loss_sum = torch.zeros((), device=device)
        sync()
        start = time.perf_counter()
        for step in range(steps):
            begin = (step * args.batch) % (args.samples - args.batch)
            idx = order[begin:begin + args.batch]
            x = images.index_select(0, idx).float() * scale + shift
            y = labels.index_select(0, idx)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
        sync()
        elapsed = time.perf_counter() - start
        assert torch.isfinite(loss_sum).item()
        return elapsed

    run(args.warmup)
    elapsed = run(args.steps)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"pytorch {torch.__version__} {name} batch={args.batch} steps={args.steps} "
          f"us_per_step={elapsed / args.steps * 1e6:.1f}")


if __name__ == "__main__":
    main()
