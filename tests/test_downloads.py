"""The dataset download path, for real, against an archive served on 127.0.0.1."""

import functools
import hashlib
import http.server
import io
import socket
import tarfile
import threading
import uuid
from pathlib import Path

import pytest

from tl import cli, datasets
from tl.downloads import keras_home
from tl.errors import DownloadError

from conftest import tiny_config, write_image_folder


@pytest.fixture(autouse=True)
def _scan_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TL_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def served(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``flowers.tar.gz``; yields (url, sha256, hits)."""
    photos = write_image_folder(tmp_path / "build" / "flower_photos", {"daisy": 4, "tulips": 5})
    (photos / "LICENSE.txt").write_text("test images")
    site = tmp_path / "site"
    site.mkdir()
    with tarfile.open(site / "flowers.tar.gz", "w:gz") as archive:
        archive.add(photos, arcname="flower_photos")
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            hits.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/flowers.tar.gz"
    yield url, hashlib.sha256((site / "flowers.tar.gz").read_bytes()).hexdigest(), hits
    server.shutdown()
    server.server_close()


def use_download(monkeypatch, url, sha256) -> datasets.Download:
    """Point the tf_flowers registry entry at ``url`` (a fresh cache file name per test)."""
    download = datasets.Download("TF Flowers", url, sha256, f"flowers_{uuid.uuid4().hex[:8]}.tar.gz",
                                 "flower_photos")
    monkeypatch.setitem(datasets.DOWNLOADS, "tf_flowers", download)
    return download


def cache_files(download) -> list:
    return sorted(p.name for p in (Path(keras_home()) / "datasets").glob(download.fname.split(".")[0] + "*"))


def test_good_checksum_downloads_once_and_loads_as_a_dataset(served, monkeypatch, capsys):
    url, sha256, hits = served
    download = use_download(monkeypatch, url, sha256)
    assert cli.main(["download", "tf_flowers"]) == 0
    err = capsys.readouterr().err
    assert "Downloading TF Flowers: 0/0 MB (0%)" in err and "(100%)" in err
    data = datasets.load(tiny_config(dataset="tf_flowers", samples_per_class=0))
    assert data.name == "tf_flowers" and data.counts() == {"daisy": 4, "tulips": 5}
    assert data.read(0).shape == (20, 20, 3)
    assert datasets.is_cached(download) and len(hits) == 1  # the second use downloads nothing
    stem = download.fname.split(".")[0]
    assert cache_files(download) == [download.fname, f"{stem}_extracted"]


def test_bad_checksum_is_one_sentence_and_leaves_no_file(served, monkeypatch):
    url, _, hits = served
    download = use_download(monkeypatch, url, "0" * 64)
    with pytest.raises(DownloadError) as info:
        datasets.load(tiny_config(dataset="tf_flowers"))
    assert str(info.value).startswith(f"The file downloaded from {url} does not match its published sha256")
    assert f"as {download.fname}." in str(info.value)
    assert cache_files(download) == []  # nothing corrupt left to be reused
    with pytest.raises(DownloadError):
        datasets.load(tiny_config(dataset="tf_flowers"))
    assert len(hits) == 2  # the retry downloaded again


def test_server_gone_names_the_url_and_the_folder(monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/flowers.tar.gz"
    download = use_download(monkeypatch, url, "0" * 64)
    with pytest.raises(DownloadError) as info:
        datasets.load(tiny_config(dataset="tf_flowers"))
    folder = Path(keras_home()) / "datasets"
    assert str(info.value) == (f"Could not download TF Flowers from {url} (no internet connection?); "
                               f"download it by hand into {folder} as {download.fname} or pick another dataset.")
    assert cache_files(download) == []
    assert cli.main(["download", "tf_flowers"]) == 2


def test_progress_printer_prints_a_line_per_ten_percent():
    out = io.StringIO()
    show = datasets.download_progress_printer(out, "X")
    for done in range(0, 1001, 7):
        show(done * 1024**2 // 10, 100 * 1024**2)
    show(100 * 1024**2, 100 * 1024**2)
    lines = out.getvalue().splitlines()
    assert lines[0] == "Downloading X: 0/100 MB (0%)" and lines[-1] == "Downloading X: 100/100 MB (100%)"
    assert len(lines) == 11


def test_every_downloadable_dataset_has_a_card_and_a_registry_entry():
    for name, spec in datasets.DATASETS.items():
        if spec.download:
            assert spec.download in datasets.DOWNLOADS
            assert set(spec.card) >= {"source", "license", "classes", "images", "citation"}
    assert datasets.DOWNLOADS["tf_flowers"].sha256 and datasets.DOWNLOADS["stanford_dogs"].sha256
