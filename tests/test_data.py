import gzip
import hashlib

import pytest
import torch

from lib import data


def _keys(images):
    return {hash(x.numpy().tobytes()) for x in images}


def test_offline_split_is_stratified_fixed_and_disjoint():
    split = data.offline_mnist()
    assert split.train_x.shape == (3500, 1, 28, 28) and split.val_x.shape == (500, 1, 28, 28)
    assert split.test_x.shape == (1000, 1, 28, 28)
    assert torch.bincount(split.train_y).tolist() == [350] * 10
    assert torch.bincount(split.val_y).tolist() == [50] * 10
    assert torch.bincount(split.test_y).tolist() == [100] * 10
    assert 0.0 <= split.train_x.min() and split.train_x.max() <= 1.0
    again = data.offline_mnist()
    assert torch.equal(split.test_x, again.test_x) and torch.equal(split.val_x, again.val_x)
    train, val, test = _keys(split.train_x), _keys(split.val_x), _keys(split.test_x)
    assert not (train & val) and not (train & test) and not (val & test)
    # the test digits do not depend on where train and validation are cut
    assert _keys(data.offline_mnist(train_per_class=300, val_per_class=100).test_x) == test


def test_offline_split_rejects_sizes_that_leave_no_test_digits():
    with pytest.raises(ValueError, match="below 500"):
        data.offline_mnist(train_per_class=450, val_per_class=50)


def test_profiles_pick_data(monkeypatch):
    quick = data.load_digits("quick")
    assert len(quick.train_x) == 1000 and torch.bincount(quick.train_y).tolist() == [100] * 10
    assert len(quick.val_x) == 500
    assert len(data.load_digits("standard").train_x) == 3500


def test_full_mnist_gets_a_validation_cut_of_the_training_files(monkeypatch):
    images = torch.arange(20, dtype=torch.uint8).repeat_interleave(784).reshape(20, 28, 28).numpy()
    labels = (torch.arange(20) % 10).to(torch.uint8).numpy()
    arrays = {"train-images": images, "train-labels": labels, "t10k-images": images[:4], "t10k-labels": labels[:4]}
    monkeypatch.setattr(data, "fetch_mnist_files", lambda name, root=None: {k: k for k in arrays})
    monkeypatch.setattr(data, "read_idx", lambda key: arrays[key])
    split = data.download_mnist(val_size=5)
    assert len(split.train_x) == 15 and len(split.val_x) == 5 and len(split.test_x) == 4
    assert not (_keys(split.train_x) & _keys(split.val_x))
    assert _keys(split.train_x) | _keys(split.val_x) == _keys(torch.tensor(images).unsqueeze(1) / 255.0)


def _fake_idx(path, array_bytes, dims):
    header = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    with gzip.open(path, "wb") as f:
        f.write(header + array_bytes)


def test_download_verifies_checksum_and_caches(tmp_path):
    source = tmp_path / "src.gz"
    _fake_idx(source, bytes(range(6)), [2, 3])
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    target = tmp_path / "cache" / "file.gz"
    data.download([source.as_uri()], target, sha)
    assert data.read_idx(target).tolist() == [[0, 1, 2], [3, 4, 5]]
    source.unlink()  # cached now: no second fetch needed
    assert data.download([source.as_uri()], target, sha) == target


def test_corrupt_download_is_rejected(tmp_path):
    source = tmp_path / "src.gz"
    source.write_bytes(b"not the real file")
    target = tmp_path / "file.gz"
    with pytest.raises(data.DownloadError, match="SHA-256 mismatch"):
        data.download([source.as_uri()], target, "0" * 64)
    assert not target.exists() and not target.with_name("file.gz.part").exists()


def test_offline_download_gives_one_clear_error(tmp_path):
    with pytest.raises(data.DownloadError, match="internet connection"):
        data.download(["https://127.0.0.1:9/x.gz"], tmp_path / "x.gz", "0" * 64, timeout=2)


def test_plain_http_is_refused(tmp_path):
    with pytest.raises(ValueError, match="HTTPS"):
        data.download(["http://example.com/x.gz"], tmp_path / "x.gz", "0" * 64)


def test_partial_download_resumes(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(b"abcdef")
    target = tmp_path / "dst.bin"
    # file:// ignores Range, so a stale partial file must be replaced, not appended to
    target.with_name("dst.bin.part").write_bytes(b"abc")
    data.download([source.as_uri()], target, hashlib.sha256(b"abcdef").hexdigest())
    assert target.read_bytes() == b"abcdef"


def test_batches_cover_data_once_per_epoch():
    x = torch.arange(10).float().unsqueeze(1)
    y = torch.arange(10)
    batches = data.Batches(x, y, batch_size=4, seed=1)
    assert len(batches) == 3
    seen = torch.cat([yb for _, yb in batches])
    assert sorted(seen.tolist()) == list(range(10))
    assert all(torch.equal(xb.squeeze(1).long(), yb) for xb, yb in batches)
    assert len(data.Batches(x, y, batch_size=4, drop_last=True)) == 2
    ordered = [yb.tolist() for _, yb in data.Batches(x, y, batch_size=5, shuffle=False)]
    assert ordered == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_batches_reject_bad_input():
    with pytest.raises(ValueError, match="same first dimension"):
        data.Batches(torch.zeros(3), torch.zeros(4), batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        data.Batches(torch.zeros(3), batch_size=0)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="mnist, fashion_mnist"):
        data.download_mnist("cifar")


def test_fetch_resumes_with_a_range_request(tmp_path):
    """A partial file is completed with an HTTP Range request, not downloaded again."""
    import http.server
    import threading

    payload = bytes(range(256)) * 40
    ranges = []

    class RangeHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server naming)
            start = int(self.headers.get("Range", "bytes=0-")[6:].rstrip("-"))
            ranges.append(start)
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(payload) - start))
            self.end_headers()
            self.wfile.write(payload[start:])

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), RangeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        partial = tmp_path / "file.bin.part"
        partial.write_bytes(payload[:1000])
        data._fetch(f"http://127.0.0.1:{server.server_port}/file.bin", partial, timeout=5)
    finally:
        server.shutdown()
    assert ranges == [1000] and partial.read_bytes() == payload
