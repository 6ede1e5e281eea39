"""The decoded-image cache of --dataset folder: decoded once into a memory-mapped file in the user's cache folder,
decoded again when anything it depends on changes, safe to share, and never in the way when it cannot be written.

`cache_home` (conftest.py) is the folder the cache goes into by default: $XDG_CACHE_HOME/resnetlab, with
XDG_CACHE_HOME set to a temporary folder for every test."""

import errno
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fakedata import write_image_folder

import resnetlab.folder
from resnetlab import imagecache
from resnetlab.batches import ImageData, TensorBatches
from resnetlab.cli import main
from resnetlab.data import load_split, load_train_test

TRAIN = ["train", "--dataset", "folder", "--epochs", "1", "--image-size", "16", "--batch-size", "8"]


@pytest.fixture
def decoded(monkeypatch):
    """The paths the folder loader decodes (and whose headers it reads), counted."""
    calls = {"decode": [], "header": []}
    decode, header = resnetlab.folder.decode, resnetlab.folder.inspect_chunk

    def counting_decode(path, *args, **kwargs):
        calls["decode"].append(path)
        return decode(path, *args, **kwargs)

    def counting_header(paths):
        calls["header"].extend(paths)
        return header(paths)

    monkeypatch.setattr(resnetlab.folder, "decode", counting_decode)
    monkeypatch.setattr(resnetlab.folder, "inspect_chunk", counting_header)
    return calls


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under folder (hidden ones too), with its size and modification time."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def _entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.glob("*.npy") if not p.name.endswith(".sums.npy"))


def _mapped_file(tensor: torch.Tensor) -> str | None:
    """The file a tensor's memory is mapped from ("" for anonymous memory), from /proc/self/maps."""
    address = tensor.untyped_storage().data_ptr()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end:
                return fields[5].strip() if len(fields) > 5 else ""
    return None


def _touch(path: Path, seconds: float = 10) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + int(seconds * 1e9)))


def test_the_second_load_decodes_nothing_and_writes_only_in_the_cache_folder(tmp_path, cache_home, decoded):
    data = write_image_folder(tmp_path / "data", per_class=4, modes=("RGB", "L"))
    before = _files(data)
    train, test = load_train_test("folder", data, image_size=16)
    assert len(decoded["decode"]) == len(train) + len(test) == 18
    assert _entries(cache_home) and len(_entries(cache_home)) == 2  # train/ and test/
    decoded["decode"].clear()
    decoded["header"].clear()
    train_again, test_again = load_train_test("folder", data, image_size=16)
    assert decoded["decode"] == [] and decoded["header"] == []  # the pixels and the channels come from the cache
    assert torch.equal(train_again.images, train.images) and torch.equal(test_again.images, test.images)
    assert train_again.mean == train.mean and train_again.std == train.std
    assert _files(data) == before  # nothing written, nothing touched in the image folder
    uncached = load_split("folder", data, train=True, image_size=16, cache_dir="")
    assert torch.equal(uncached.images, train.images)
    assert uncached.mean == pytest.approx(train.mean, abs=1e-12) and uncached.std == pytest.approx(train.std, abs=1e-12)


def test_a_changed_folder_is_decoded_again_and_its_old_entry_pruned(tmp_path, cache_home, decoded):
    data = write_image_folder(tmp_path / "data", classes=("a", "b"), per_class=4)
    first = load_split("folder", data, train=True, image_size=16)
    old = _entries(cache_home)
    decoded["decode"].clear()
    _touch(data / "train" / "a" / "1.jpg")  # same bytes, another modification time
    load_split("folder", data, train=True, image_size=16)
    assert len(decoded["decode"]) == len(first)
    assert len(_entries(cache_home)) == len(old) and _entries(cache_home) != old  # replaced, not added
    decoded["decode"].clear()
    (data / "train" / "b" / "0.png").rename(data / "train" / "b" / "extra.png")  # renamed: another listing
    (data / "train" / "a" / "0.png").write_bytes((data / "train" / "a" / "2.png").read_bytes())  # another size
    added = load_split("folder", data, train=True, image_size=16)
    assert len(decoded["decode"]) == len(first) and len(added) == len(first)
    decoded["decode"].clear()
    (data / "train" / "b" / "extra.png").unlink()
    assert len(load_split("folder", data, train=True, image_size=16)) == len(first) - 1
    assert len(decoded["decode"]) == len(first) - 1
    decoded["decode"].clear()
    load_split("folder", data, train=True, image_size=16)
    assert decoded["decode"] == []


def test_another_size_channels_or_format_version_is_another_entry(tmp_path, cache_home, decoded, monkeypatch):
    data = write_image_folder(tmp_path / "data", classes=("a", "b"), per_class=3)
    load_split("folder", data, train=True, image_size=16)
    load_split("folder", data, train=True, image_size=24)
    gray = load_split("folder", data, train=True, image_size=16, channels=1)
    assert gray.channels == 1 and len(decoded["decode"]) == 3 * len(gray)
    assert len(_entries(cache_home)) == 3  # the folder at other sizes and channels is kept
    decoded["decode"].clear()
    load_split("folder", data, train=True, image_size=24)
    assert decoded["decode"] == []
    monkeypatch.setattr(imagecache, "FORMAT_VERSION", imagecache.FORMAT_VERSION + 1)
    load_split("folder", data, train=True, image_size=24)
    assert len(decoded["decode"]) == len(gray)
    assert len(_entries(cache_home)) == 3  # the older version's entry at that size was pruned


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "other shape", "no sums"])
def test_a_damaged_cache_file_is_decoded_again_without_a_traceback(tmp_path, cache_home, decoded, damage):
    data = write_image_folder(tmp_path / "data", classes=("a", "b"), per_class=3)
    first = load_split("folder", data, train=True, image_size=16)
    expected, count = first.images.clone(), len(first)
    del first  # its mapping would see the file cut short under it (resnetlab itself only ever replaces files)
    (pixels,) = [cache_home / name for name in _entries(cache_home)]
    if damage == "truncated":
        pixels.write_bytes(pixels.read_bytes()[:1000])
    elif damage == "garbage":
        pixels.write_bytes(b"not a numpy file" * 100)
    elif damage == "empty":
        pixels.write_bytes(b"")
    elif damage == "other shape":
        np.save(pixels, np.zeros((count, 3, 8, 8), dtype=np.uint8))
    else:
        pixels.with_name(pixels.name.replace(".npy", ".sums.npy")).unlink()
    decoded["decode"].clear()
    again = load_split("folder", data, train=True, image_size=16)
    assert len(decoded["decode"]) == count and torch.equal(again.images, expected)
    if damage != "no sums":
        assert any("were damaged" in note and "decoded them again" in note for note in again.notes)
    decoded["decode"].clear()
    load_split("folder", data, train=True, image_size=16)
    assert decoded["decode"] == []  # whole again


def _refuse(error: int):
    def fail(*args, **kwargs):
        raise OSError(error, os.strerror(error))

    return fail


def _trains_with_one_warning(capsys, tmp_path, cache: Path, data: Path, expected: str) -> None:
    assert main([*TRAIN, "--data-dir", str(data), "--out", str(tmp_path / "run"), "--cache-dir", str(cache)]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.out.splitlines() if "could not cache" in line]
    assert len(warnings) == 1 and expected in warnings[0] and "--no-cache" in warnings[0], captured.out
    assert "Traceback" not in captured.err
    assert (tmp_path / "run" / "best.pt").is_file()
    assert [p.name for p in cache.iterdir() if p.suffix == ".npy" or ".tmp" in p.name] == []  # nothing left


def test_a_read_only_cache_folder_is_one_warning_and_training_goes_on(tmp_path, capsys, monkeypatch):
    data = write_image_folder(tmp_path / "data", classes=("a", "b"), per_class=4)
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        if os.access(cache, os.W_OK):  # root: chmod does not stop it, so the file system says no instead
            open_memmap = np.lib.format.open_memmap

            def read_only(path, mode="r+", *args, **kwargs):
                if mode == "w+":
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS))
                return open_memmap(path, mode, *args, **kwargs)

            monkeypatch.setattr(imagecache.np.lib.format, "open_memmap", read_only)
            expected = os.strerror(errno.EROFS)
        else:
            expected = os.strerror(errno.EACCES)
        _trains_with_one_warning(capsys, tmp_path, cache, data, expected)
    finally:
        cache.chmod(0o755)


@pytest.mark.parametrize("stage", ["_preallocate", "_fsync"])
def test_a_full_disk_is_one_warning_and_training_goes_on(tmp_path, capsys, monkeypatch, stage):
    """The disk is full when the pixels' room is reserved (before decoding), or when they are made durable
    (after: the decoded pixels are used, from the temporary file)."""
    data = write_image_folder(tmp_path / "data", classes=("a", "b"), per_class=4)
    monkeypatch.setattr(imagecache, stage, _refuse(errno.ENOSPC))
    _trains_with_one_warning(capsys, tmp_path, tmp_path / "cache", data, os.strerror(errno.ENOSPC))


def test_two_builders_of_one_entry_both_succeed_and_readers_never_see_half_of_it(
    tmp_path, cache_home, decoded, monkeypatch
):
    data = write_image_folder(tmp_path / "data", classes=("a", "b", "c"), per_class=6, splits=("train",))
    decode = resnetlab.folder.decode  # the counting one

    def slow_decode(path, *args, **kwargs):
        time.sleep(0.02)  # both builders are decoding before either has finished
        return decode(path, *args, **kwargs)

    monkeypatch.setattr(resnetlab.folder, "decode", slow_decode)
    results, errors, seen, done = {}, [], [], threading.Event()

    def build(name):
        try:
            results[name] = load_split("folder", data / "train", train=True, image_size=16)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    def read():
        while not done.is_set():
            for path in cache_home.glob("*.npy") if cache_home.exists() else []:
                if not path.name.startswith(".") and not path.name.endswith(".sums.npy"):
                    found = imagecache.read(imagecache.Entry(cache_home, *path.name[:-4].split("-")), (18, 3, 16, 16))
                    seen.append(found is not None and int(found[0][-1].sum()) > 0)  # the last image is there too
            time.sleep(0.005)

    reader = threading.Thread(target=read)
    reader.start()
    builders = [threading.Thread(target=build, args=(name,)) for name in ("first", "second")]
    for thread in builders:
        thread.start()
    for thread in builders:
        thread.join(timeout=120)
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:  # the reader has looked at least once since the files appeared
        time.sleep(0.01)
    done.set()
    reader.join(timeout=10)
    assert not errors and set(results) == {"first", "second"}
    assert len(decoded["decode"]) == 2 * 18  # both built it: neither found the other's entry finished
    assert torch.equal(results["first"].images, results["second"].images)
    assert results["first"].mean == results["second"].mean
    assert seen and all(seen)  # every time a reader found the file, it was whole
    assert len(_entries(cache_home)) == 1 and not [p for p in cache_home.iterdir() if ".tmp" in p.name]


def test_cache_dir_and_no_cache_on_the_command_line(tmp_path, cache_home, decoded, capsys):
    data = write_image_folder(tmp_path / "data", classes=("a", "b"), per_class=4)
    mine = tmp_path / "mine"
    out = tmp_path / "run"
    assert main([*TRAIN, "--data-dir", str(data), "--out", str(out), "--cache-dir", str(mine)]) == 0
    assert len(_entries(mine)) == 2 and not cache_home.exists()  # only where --cache-dir says
    decoded["decode"].clear()
    assert main(["eval", str(out), "--json", "--cache-dir", str(mine)]) == 0
    assert main(["predict", str(out), "-n", "3", "--json", "--cache-dir", str(mine)]) == 0
    assert decoded["decode"] == []
    assert main(["eval", str(out), "--json"]) == 0  # the default cache folder: decoded into it
    assert len(_entries(cache_home)) == 1
    snapshot = {**_files(mine), **_files(cache_home)}
    decoded["decode"].clear()
    for flags in (["--no-cache"], ["--cache-dir", ""]):
        assert main(["eval", str(out), "--json", *flags]) == 0
    assert len(decoded["decode"]) == 2 * 4  # the test split, decoded each time; nothing cached anywhere
    assert {**_files(mine), **_files(cache_home)} == snapshot
    capsys.readouterr()
    assert main(["train", "--no-cache", "--cache-dir", str(mine), "--data-dir", str(data)]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_cache_folder_inside_the_image_folder_is_not_used(tmp_path, decoded):
    data = write_image_folder(tmp_path / "data", classes=("a", "b"), per_class=3)
    before = _files(data)
    split = load_split("folder", data, train=True, image_size=16, cache_dir=str(data / "train" / ".cache"))
    assert any("is inside the image folder" in note for note in split.notes)
    assert _files(data) == before and len(decoded["decode"]) == len(split)


def test_a_cached_split_is_memory_mapped_and_trains_an_epoch(tmp_path, cache_home):
    if not Path("/proc/self/maps").exists():
        pytest.skip("needs Linux's /proc/self/maps")
    from resnetlab.engine import build_scheduler, train_one_epoch
    from resnetlab.models import create_model
    from resnetlab.preprocess import PixelClassifier
    from resnetlab.runtime import select_runtime

    photos = write_image_folder(tmp_path / "made", classes=("a", "b"), per_class=8, splits=("train",)) / "train"
    train, test = load_train_test("folder", photos, image_size=16)  # class folders: a held-out share
    (entry,) = _entries(cache_home)
    for split in (train, test):
        assert _mapped_file(split.pixels) == str(cache_home / entry)  # the file itself, not an anonymous copy
        assert split.rows is not None and len(split.pixels) == 16  # the held-out share is rows of one file
    assert torch.equal(torch.cat([train.images, test.images]).sum(0), train.pixels.sum(0))
    model = PixelClassifier(create_model("resnet8w", num_classes=2, in_channels=3), train.mean, train.std)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    batches = TensorBatches(train.sample(10, seed=1), 4, shuffle=True, augment=True, crop_padding=2, hflip=True)
    stats = train_one_epoch(
        model, batches, optimizer, build_scheduler(_recipe(), optimizer, len(batches)), select_runtime("cpu", "fp32")
    )
    assert stats["totals"]["seen"] == 10 and np.isfinite(stats["train_loss"])


def _recipe():
    from resnetlab.config import RECIPES

    return RECIPES["fast"]


def _rss_anon() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("RssAnon:"))


def _peak_rss_anon_growth(work) -> int:
    """How far RssAnon rose above its level before work() while it ran, sampled every millisecond (a copy of the
    whole split takes tens of milliseconds to fill, and is freed again before work returns)."""
    before, peak, done = _rss_anon(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_anon())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        work()
    finally:
        done.set()
        sampler.join()
    return max(peak[0], _rss_anon()) - before


def test_batches_of_a_mapped_split_copy_only_themselves(tmp_path):
    """128 MB of mapped pixels read through every path a split takes (sample, select, shard, channels, batches,
    chunks): anonymous memory grows by a fraction of it at any moment, never by the split."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux's /proc/self/status")
    count, size = 128 * 1024**2 // 1024, 32  # 1-channel 32x32 images: 128 MB
    np.lib.format.open_memmap(tmp_path / "pixels.npy", mode="w+", dtype=np.uint8, shape=(count, 1, size, size))
    pixels = torch.from_numpy(np.lib.format.open_memmap(tmp_path / "pixels.npy", mode="c"))
    data = ImageData(pixels, torch.zeros(count, dtype=torch.int64), ["a"], (0.5,), (0.25,))

    def read_everything():
        for split in (data.sample(count - 10, seed=0).with_channels(3), data.select(torch.arange(0, count, 2))):
            for images, _ in TensorBatches(split, 256, shuffle=True):
                assert images.shape[1:] == (split.channels, size, size)
            assert sum(int(chunk[:, :, 0, 0].sum()) for chunk in split.chunks(512)) == 0

    grown = _peak_rss_anon_growth(read_everything)
    assert grown < 32 * 1024**2, f"anonymous memory grew by {grown / 1e6:.0f} MB"


def test_without_a_cache_each_header_is_read_once(tmp_path, decoded):
    data = write_image_folder(tmp_path / "data", classes=("a", "b"), per_class=4, modes=("L",))
    train, test = load_train_test("folder", data, image_size=16, cache_dir="")
    assert train.channels == test.channels == 1
    assert sorted(decoded["header"]) == sorted(decoded["decode"])  # every image once: no second walk for test/
    assert len(decoded["header"]) == len(train) + len(test)


def test_a_change_in_another_split_reads_headers_again_but_keeps_this_split(tmp_path, cache_home, decoded):
    data = write_image_folder(tmp_path / "data", classes=("a", "b"), per_class=4, modes=("L",))
    load_train_test("folder", data, image_size=16)
    decoded["decode"].clear()
    decoded["header"].clear()
    _touch(data / "test" / "a" / "0.png")
    train, test = load_train_test("folder", data, image_size=16)
    assert train.channels == 1 and decoded["header"]  # the channels were decided again, from the headers
    assert len(decoded["decode"]) == len(test)  # train/ is still cached


def test_decoding_in_worker_processes_gives_the_pixels_and_sums_of_decoding_each_file(tmp_path, monkeypatch):
    from resnetlab.folder import DECODE_CHUNK, decode_all
    from resnetlab.imagefiles import decode

    root = write_image_folder(tmp_path / "pics", per_class=5)
    paths = sorted(str(p) for p in (root / "train").rglob("*.*"))
    pools = []
    choose = resnetlab.folder._decoding_pool
    monkeypatch.setattr(resnetlab.folder, "_decoding_pool", lambda tasks: pools.append(choose(tasks)) or pools[-1])
    monkeypatch.setattr(resnetlab.folder, "DECODE_CHUNK", 4)  # 15 files: 4 tasks, in worker processes
    pixels, sums = decode_all(paths, 3, 16)
    assert type(pools[0]).__name__ == "ProcessPoolExecutor" and DECODE_CHUNK > 4
    expected = torch.stack([decode(path, 3, 16) for path in paths])
    assert torch.equal(pixels, expected)
    flat = expected.reshape(len(paths), 3, -1).to(torch.int64)
    assert torch.equal(sums, torch.stack([flat.sum(2), (flat * flat).sum(2)], dim=2))

    (root / "train" / "dog" / "9.jpg").write_bytes(b"not a picture")  # in the third task
    with pytest.raises(resnetlab.folder.UserError, match="9.jpg is not a readable image"):
        decode_all(sorted(str(p) for p in (root / "train").rglob("*.*")), 3, 16)


def test_a_file_replaced_with_its_size_and_modification_time_kept_is_decoded_again(tmp_path, cache_home, decoded):
    """What cp -p, rsync -a and unzip do: another photo of the same size, with its old modification time."""
    from PIL import Image

    data = tmp_path / "data"
    for split in ("train", "test"):
        for k, name in enumerate(("a", "b")):
            (data / split / name).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (20, 20), (80 * i, 100 * k, 50)).save(data / split / name / f"{i}.bmp")  # one size
    first = load_split("folder", data, train=True, image_size=16)
    photo, other = data / "train" / "a" / "0.bmp", data / "train" / "b" / "2.bmp"  # rows 0 and 5
    stat = photo.stat()
    photo.write_bytes(other.read_bytes())
    os.utime(photo, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (photo.stat().st_size, photo.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    decoded["decode"].clear()
    again = load_split("folder", data, train=True, image_size=16)
    assert len(decoded["decode"]) == len(first) == 6
    assert torch.equal(again.images[0], first.images[5]) and not torch.equal(again.images[0], first.images[0])
