"""A plain PyTorch reference of keras-fer's `cnn4`, for `bench/train_throughput.py`.

The network of report 000: conv 32 5x5 pad 2 -> LeakyReLU(0.05) -> max-pool 2; conv 64 3x3 pad 1
-> LeakyReLU -> pool; conv 128 -> LeakyReLU -> BatchNorm -> pool; conv 128 -> LeakyReLU ->
BatchNorm -> pool; flatten 1152 -> dense 256 -> ReLU -> BatchNorm -> dense 7 (538,759 trainable
parameters, as keras-fer's cnn4). Adam (lr 1e-3), cross-entropy on logits, float32, batch 64,
`torch.set_num_threads(2)`.

"Plain" means what a short PyTorch script does: the uint8 faces sit in one NCHW tensor, each
epoch draws a `randperm`, each step indexes a batch and divides by 255 inside the model; no
DataLoader workers, no channels-last, no compilation. Validation runs in eval mode under
`torch.no_grad()` in batches of 256.

Run alone for a quick look: `PYTHONPATH=. ~/venv/bin/python bench/torch_cnn4.py`.
"""

import time

import numpy as np

TORCH_VERSION = "2.13.0"


def import_torch():
    """`torch`, or None with the reason when it is not installed."""
    try:
        import torch
    except ImportError as error:
        return None, (f"torch is not installed ({error}); install the CPU wheel with "
                      f"`~/venv/bin/pip install torch=={TORCH_VERSION}` to compare against PyTorch")
    return torch, None


def build_net(torch, num_classes=7, negative_slope=0.05):
    nn = torch.nn

    class Cnn4(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 32, 5, padding=2), nn.LeakyReLU(negative_slope), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.LeakyReLU(negative_slope), nn.MaxPool2d(2),
                nn.Conv2d(64, 128, 3, padding=1), nn.LeakyReLU(negative_slope), nn.BatchNorm2d(128), nn.MaxPool2d(2),
                nn.Conv2d(128, 128, 3, padding=1), nn.LeakyReLU(negative_slope), nn.BatchNorm2d(128), nn.MaxPool2d(2),
            )
            self.classifier = nn.Sequential(
                nn.Flatten(), nn.Linear(1152, 256), nn.ReLU(), nn.BatchNorm1d(256), nn.Linear(256, num_classes),
            )

        def forward(self, x):
            return self.classifier(self.features(x.float() / 255.0))

    return Cnn4()


class TorchTrainer:
    """Trains the reference epoch by epoch and records the end time of every step.

    Args:
        train_pixels, train_labels: uint8 `(N, 48, 48, 1)` and int labels.
        val_pixels, val_labels: the validation split (may be empty).
        batch_size, threads, seed, lr: as named.
    """

    def __init__(self, train_pixels, train_labels, val_pixels=None, val_labels=None, batch_size=64, threads=2,
                 seed=0, lr=1e-3):
        torch, reason = import_torch()
        if torch is None:
            raise ImportError(reason)
        self.torch = torch
        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.net = build_net(torch)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.loss = torch.nn.CrossEntropyLoss()
        to_nchw = lambda pixels: torch.from_numpy(np.ascontiguousarray(np.asarray(pixels).transpose(0, 3, 1, 2)))  # noqa: E731
        self.x = to_nchw(train_pixels)
        self.y = torch.from_numpy(np.asarray(train_labels, np.int64))
        self.val_x = to_nchw(val_pixels) if val_pixels is not None and len(val_pixels) else None
        self.val_y = torch.from_numpy(np.asarray(val_labels, np.int64)) if self.val_x is not None else None
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def trainable_params(self):
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad)

    def train_epoch(self, max_steps=None):
        """One epoch (or its first `max_steps` steps). Returns `(marks, sizes, val_seconds, cpu_marks)`:
        `marks[0]` is the epoch start and `marks[i]` the end of step i; `sizes[i - 1]` its images.
        `cpu_marks` holds the process CPU time at the same points."""
        torch = self.torch
        self.net.train()
        marks = [time.perf_counter()]
        self.cpu_marks = [time.process_time()]
        sizes = []
        order = torch.randperm(len(self.y), generator=self.generator)
        for step, start in enumerate(range(0, len(order), self.batch_size)):
            if max_steps is not None and step >= max_steps:
                break
            index = order[start:start + self.batch_size]
            x, y = self.x[index], self.y[index]
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss(self.net(x), y)
            loss.backward()
            self.optimizer.step()
            loss.item()  # what a plain loop logs; also keeps the timing honest
            marks.append(time.perf_counter())
            self.cpu_marks.append(time.process_time())
            sizes.append(len(index))
        val_seconds = self.validate() if max_steps is None else 0.0
        self.epoch_cpu = time.process_time() - self.cpu_marks[0]  # with validation
        return marks, sizes, val_seconds, self.cpu_marks

    def validate(self, batch_size=256):
        """Validation accuracy pass; returns its seconds."""
        if self.val_x is None:
            return 0.0
        torch = self.torch
        started = time.perf_counter()
        self.net.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, len(self.val_y), batch_size):
                logits = self.net(self.val_x[start:start + batch_size])
                correct += int((logits.argmax(1) == self.val_y[start:start + batch_size]).sum())
        self.val_accuracy = correct / len(self.val_y)
        return time.perf_counter() - started


def main():
    torch, reason = import_torch()
    if torch is None:
        print(f"skipped: {reason}")
        return
    from keras_fer.synthetic import generate

    faces = generate(1024, seed=0).images
    trainer = TorchTrainer(faces.pixels, faces.labels, faces.pixels[:256], faces.labels[:256])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{trainer.trainable_params:,} trainable parameters")
    trainer.train_epoch(max_steps=3)
    marks, sizes, val_seconds, _ = trainer.train_epoch()
    print(f"one epoch of {sum(sizes)} demo faces: {sum(sizes[2:]) / (marks[-1] - marks[3]):,.0f} img/s steady, "
          f"validation {val_seconds:.2f} s")


if __name__ == "__main__":
    main()
