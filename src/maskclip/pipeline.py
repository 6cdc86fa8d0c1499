"""The batched, overlapped pipeline behind segment, label and eval, free of what is read or written.

Three stages run at once: DataLoader worker processes decode the next inputs (and make the encoder's
normalised, resized input) while the model encodes a batch of images whose windows share encoder passes,
and one background thread writes the finished outputs. Memory stays bounded by the options: at most
`workers x prefetch` decoded inputs wait, a batch holds at most `batch_images` images and `batch_pixels`
input pixels (one image over the budget goes alone), and at most `pending_writes` results wait to be
written. The outputs are those of one image at a time (`tests/test_pipeline.py`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

import torch
from torch.utils.data import DataLoader, Dataset

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class PipelineOptions:
    """None = the device's default (`resolve`): with CUDA, 2 decoding workers and 8 images a batch keep the GPU
    fed; on a CPU the model's threads already use every core: on 2 cores decoding workers were slower (slide
    0.78-0.89x of none) and batches of 4 images gained nothing over one (0.99x whole, 1.04x slide; an earlier
    run: 0.77x whole) while holding more in memory (`benchmarks/pipeline_options.py`), so the CPU default is
    0 workers and 1 image a batch; the background writer stays on (up to 1.10x)."""

    workers: int | None = None  # DataLoader worker processes decoding inputs (0: decode in the calling process)
    prefetch: int = 2  # inputs each worker decodes ahead
    batch_images: int | None = None  # images encoded together (their windows share encoder passes)
    batch_pixels: int = 16_000_000  # and at most this many decoded input pixels per batch
    pending_writes: int = 4  # finished results waiting for the writer thread (0: write in the calling thread)

    def __post_init__(self):
        if (self.workers is not None and self.workers < 0) or self.prefetch < 1 or self.batch_pixels < 1 \
                or (self.batch_images is not None and self.batch_images < 1) or self.pending_writes < 0:
            raise ValueError("pipeline options: workers and pending_writes >= 0; prefetch, batch_images and "
                             "batch_pixels >= 1")

    def resolve(self, device: torch.device | str) -> PipelineOptions:
        """The options with every None replaced by the device's default (class docstring)."""
        gpu = torch.device(device).type == "cuda"
        return replace(self, workers=(min(2, os.cpu_count() or 1) if gpu else 0) if self.workers is None
                       else self.workers, batch_images=(8 if gpu else 1) if self.batch_images is None
                       else self.batch_images)


@dataclass(frozen=True)
class Failed:
    """An input that could not be read: the message names the file and what to do."""

    error: str


class _Reads(Dataset, Generic[T, R]):
    def __init__(self, items: Sequence[T], read: Callable[[T], R]):
        self.items, self.read = items, read

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> R | Failed:
        try:
            return self.read(self.items[i])
        except (OSError, ValueError) as err:  # ImageReadError and SettingsError are ValueErrors
            return Failed(str(err))


def _as_is(x):
    return x


def prefetched(items: Sequence[T], read: Callable[[T], R], workers: int = 2, prefetch: int = 2
               ) -> Iterator[tuple[T, R | Failed]]:
    """(item, read(item)) in order, read `workers` processes ahead (a picklable `read`); an item whose read
    raised OSError/ValueError comes with a Failed instead. workers=0 or a single item: read here."""
    reads = _Reads(items, read)
    if workers <= 0 or len(items) <= 1:
        yield from ((item, reads[i]) for i, item in enumerate(items))
        return
    loader = DataLoader(reads, batch_size=None, shuffle=False, num_workers=min(workers, len(items)),
                        prefetch_factor=prefetch, collate_fn=_as_is)
    yield from zip(items, loader)


def batches(pairs: Iterable[tuple[T, R]], max_items: int, max_cost: int, cost: Callable[[R], int]
            ) -> Iterator[list[tuple[T, R]]]:
    """Consecutive pairs grouped: at most `max_items`, and at most `max_cost` summed over a batch unless one
    item alone exceeds it."""
    batch: list[tuple[T, R]] = []
    total = 0
    for pair in pairs:
        c = cost(pair[1])
        if batch and (len(batch) >= max_items or total + c > max_cost):
            yield batch
            batch, total = [], 0
        batch.append(pair)
        total += c
    if batch:
        yield batch


class BackgroundWriter:
    """Runs write jobs in one thread, in submission order, with at most `pending` waiting (submit blocks
    beyond: memory stays bounded); pending=0 runs them in the caller. `done(error)` follows each job, with the
    OSError/ValueError it raised or None; any other error is raised again by `close`."""

    def __init__(self, pending: int = 4):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="maskclip-writer") if pending > 0 else None
        self._slots = threading.BoundedSemaphore(pending) if pending > 0 else None
        self._crash: BaseException | None = None

    def submit(self, job: Callable[[], Any], done: Callable[[BaseException | None], None]) -> None:
        if self._crash is not None:
            raise self._crash
        if self._pool is None:
            self._run(job, done)
            return
        self._slots.acquire()
        self._pool.submit(self._run, job, done)

    def _run(self, job: Callable[[], Any], done: Callable[[BaseException | None], None]) -> None:
        try:
            job()
            done(None)
        except (OSError, ValueError) as err:
            done(err)
        except BaseException as err:  # a bug: surfaced by close() and the next submit
            self._crash = err
        finally:
            if self._slots is not None:
                self._slots.release()

    def close(self) -> None:
        """Wait for every submitted job; raise what crashed one."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._crash is not None:
            raise self._crash

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # never leave a file being written behind
        if exc[0] is None:
            self.close()


__all__ = ["BackgroundWriter", "Failed", "PipelineOptions", "batches", "prefetched"]
