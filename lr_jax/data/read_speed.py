"""`python -m lr_jax.data.read_speed SOURCE...`: seconds to read each --data_dir source, without and with the cache."""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time

from lr_jax.data import load_dataset
from lr_jax.data.image_folder import available_cpus

def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the decoding workers), user + system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(function):
    """(value, wall seconds, CPU seconds): CPU time does not grow when other jobs share the machine."""
    start, cpu = time.perf_counter(), cpu_seconds()
    value = function()
    return value, time.perf_counter() - start, cpu_seconds() - cpu


def measure(name: str, source: str) -> dict:
    """(wall, CPU) seconds of: a plain read; a first read with --cache_dir (reads and writes the cache); a second."""
    cache_dir = tempfile.mkdtemp(prefix="lr_jax_cache_")
    try:
        dataset, *plain = timed(lambda: load_dataset(name, source))
        _, *first = timed(lambda: load_dataset(name, source, cache_dir=cache_dir))
        cached, *second = timed(lambda: load_dataset(name, source, cache_dir=cache_dir))
    finally:
        shutil.rmtree(cache_dir)
    assert "decoded arrays from cache" in cached.source
    return dict(images=len(dataset.train_labels) + (0 if dataset.test_labels is None else len(dataset.test_labels)),
                reader=dataset.source, plain=plain, first=first, second=second)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sources", nargs="+", help="folders or archives to read, as --data_dir takes them")
    parser.add_argument("--name", default="cifar10", help="dataset name passed to load_dataset")
    args = parser.parse_args(argv)
    print(f"{available_cpus()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for source in args.sources:
        r = measure(args.name, source)
        print(f"{source}: {r['images']} images via {r['reader']}")
        labels = ("read", "first read with --cache_dir", "second read (cache)")
        for key, label in zip(("plain", "first", "second"), labels):
            wall, cpu = r[key]
            print(f"  {label}: {wall:.2f} s wall, {cpu:.2f} s CPU ({r['images'] / wall:.0f} images/s)")


if __name__ == "__main__":
    main()
