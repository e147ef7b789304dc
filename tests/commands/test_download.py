"""Tests for bloodcls.commands.download against a throwaway HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import stat
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bloodcls.commands.download import DownloadError, download, download_file, safe_extract_zip
from bloodcls.commands.download import main as download_main

PAYLOAD = b"blood cells " * 1000


@dataclass
class Server:
    url: str  # base URL, no trailing slash
    root: Path  # directory being served
    hits: Counter[str]  # request path -> count

    def publish(self, name: str, data: bytes) -> str:
        (self.root / name).write_bytes(data)
        return f"{self.url}/{name}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    hits: Counter[str] = Counter()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            hits[self.path.split("?")[0]] += 1
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", root, hits)
    finally:
        httpd.shutdown()
        httpd.server_close()


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def make_zip(entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # Unix, so external_attr carries a mode
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# --- download_file -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sha256", "md5"])
def test_download_file_verifies_checksum(server: Server, tmp_path: Path, kind: str) -> None:
    url = server.publish("payload.bin", PAYLOAD)
    digest = {"sha256": sha256_of, "md5": md5_of}[kind](PAYLOAD)
    dest = tmp_path / "out" / "payload.bin"
    assert download_file(url, dest, **{kind: digest}) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("payload.bin.part").exists()


def test_wrong_checksum_raises_and_leaves_nothing(server: Server, tmp_path: Path) -> None:
    url = server.publish("payload.bin", PAYLOAD)
    dest = tmp_path / "out" / "payload.bin"
    with pytest.raises(DownloadError, match=f"expected {'0' * 64}, got {sha256_of(PAYLOAD)}"):
        download_file(url, dest, sha256="0" * 64)
    assert list((tmp_path / "out").iterdir()) == []


def test_rerun_skips_download_when_checksum_matches(server: Server, tmp_path: Path) -> None:
    url = server.publish("payload.bin", PAYLOAD)
    dest = tmp_path / "payload.bin"
    download_file(url, dest, sha256=sha256_of(PAYLOAD))
    download_file(url, dest, sha256=sha256_of(PAYLOAD))
    assert server.hits["/payload.bin"] == 1


def test_corrupt_existing_file_is_replaced(server: Server, tmp_path: Path) -> None:
    url = server.publish("payload.bin", PAYLOAD)
    dest = tmp_path / "payload.bin"
    dest.write_bytes(b"truncated")
    download_file(url, dest, md5=md5_of(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert server.hits["/payload.bin"] == 1


def test_file_url(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "copy.bin"
    download_file(src.as_uri(), dest, sha256=sha256_of(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


def test_http_404_is_a_download_error(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(f"{server.url}/missing.bin", tmp_path / "x.bin", sha256="0" * 64)
    assert not (tmp_path / "x.bin.part").exists()


def test_malformed_checksum_rejected_before_fetching(server: Server, tmp_path: Path) -> None:
    url = server.publish("payload.bin", PAYLOAD)
    with pytest.raises(ValueError, match="--sha256 must be 64 hex characters"):
        download_file(url, tmp_path / "x.bin", sha256="abc")
    assert server.hits["/payload.bin"] == 0


# --- safe_extract_zip --------------------------------------------------------------------------------


def test_safe_extract_zip_extracts_nested_files(tmp_path: Path) -> None:
    archive = tmp_path / "ok.zip"
    archive.write_bytes(make_zip({"a.txt": b"a", "sub/dir/b.txt": b"b", "sub/empty/": b""}))
    dest = tmp_path / "dest"
    written = safe_extract_zip(archive, dest)
    assert sorted(written) == sorted([(dest / "a.txt").resolve(), (dest / "sub/dir/b.txt").resolve()])
    assert (dest / "sub/dir/b.txt").read_bytes() == b"b"
    assert (dest / "sub/empty").is_dir()


@pytest.mark.parametrize(
    ("bad_name", "reason"),
    [
        ("../evil.txt", "'..' path component"),
        ("sub/../../evil.txt", "'..' path component"),
        ("/abs.txt", "absolute path"),
        ("C:/evil.txt", "drive letter"),
        ("..\\evil.txt", "'..' path component"),
    ],
)
def test_safe_extract_zip_refuses_escaping_paths(tmp_path: Path, bad_name: str, reason: str) -> None:
    archive = tmp_path / "bad.zip"
    # A harmless entry first proves nothing is written before the bad one is found.
    archive.write_bytes(make_zip({"good.txt": b"ok", bad_name: b"pwned"}))
    dest = tmp_path / "a" / "dest"
    before = all_files(tmp_path)
    with pytest.raises(DownloadError, match=rf"refusing to extract entry .*\({reason}\)"):
        safe_extract_zip(archive, dest)
    assert all_files(tmp_path) == before
    assert not dest.exists()


def test_safe_extract_zip_refuses_symlinks(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    archive.write_bytes(make_zip({"good.txt": b"ok"}, symlinks={"link": "/etc/passwd"}))
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match=r"'link' \(symbolic link\)"):
        safe_extract_zip(archive, dest)
    assert not dest.exists()


def test_safe_extract_zip_not_a_zip(tmp_path: Path) -> None:
    archive = tmp_path / "fake.zip"
    archive.write_bytes(b"not a zip")
    with pytest.raises(DownloadError, match="fake.zip: not a readable zip archive"):
        safe_extract_zip(archive, tmp_path / "dest")


# --- download (URL) ----------------------------------------------------------------------------------


def test_url_without_checksum_is_refused(server: Server, tmp_path: Path) -> None:
    url = server.publish("data.zip", make_zip({"a.txt": b"a"}))
    with pytest.raises(ValueError, match="checksum is required.*--sha256 HEX or --md5 HEX"):
        download(url, tmp_path / "dest")
    assert server.hits["/data.zip"] == 0
    assert not (tmp_path / "dest").exists()


def test_url_zip_is_verified_and_extracted(server: Server, tmp_path: Path) -> None:
    data = make_zip({"cells/a.txt": b"a", "cells/b.txt": b"b"})
    url = server.publish("data.zip", data)
    dest = tmp_path / "dest"
    assert download(url, dest, sha256=sha256_of(data)) == dest
    assert (dest / "cells/a.txt").read_bytes() == b"a"
    assert (dest / "cells/b.txt").read_bytes() == b"b"


def test_url_no_extract_returns_archive(server: Server, tmp_path: Path) -> None:
    data = make_zip({"a.txt": b"a"})
    url = server.publish("data.zip", data)
    path = download(url, tmp_path / "dest", md5=md5_of(data), extract=False)
    assert path == tmp_path / "dest" / "data.zip"
    assert not (tmp_path / "dest" / "a.txt").exists()


def test_url_npz_is_not_extracted(server: Server, tmp_path: Path) -> None:
    # .npz files are zips internally; they must be kept whole.
    buf = io.BytesIO()
    np.savez(buf, x=np.arange(3))
    url = server.publish("arrays.npz", buf.getvalue())
    path = download(url, tmp_path / "dest", sha256=sha256_of(buf.getvalue()))
    assert path == tmp_path / "dest" / "arrays.npz"
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["arrays.npz"]


def test_unknown_dataset_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'nosuchmnist'; expected one of: bloodmnist"):
        download("nosuchmnist", tmp_path)


# --- download (bloodmnist by name) -------------------------------------------------------------------


def make_bloodmnist_npz(size: int, counts: dict[str, int]) -> bytes:
    """A tiny file in medmnist's npz layout: uint8 (n, size, size, 3) images, uint8 (n, 1) labels."""
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    for split, n in counts.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n, dtype=np.uint8) % 8).reshape(n, 1)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


@pytest.fixture
def fake_bloodmnist(server: Server, monkeypatch: pytest.MonkeyPatch) -> dict[int, bytes]:
    """Serve small bloodmnist files for sizes 28 and 64 and point medmnist.INFO at them."""
    import medmnist

    info = dict(medmnist.INFO["bloodmnist"])
    files: dict[int, bytes] = {}
    for size in (28, 64):
        suffix = "" if size == 28 else f"_{size}"
        data = make_bloodmnist_npz(size, {"train": 5, "val": 2, "test": 3})
        files[size] = data
        info[f"url{suffix}"] = server.publish(f"bloodmnist{suffix}.npz", data) + "?download=1"
        info[f"MD5{suffix}"] = md5_of(data)
    monkeypatch.setitem(medmnist.INFO, "bloodmnist", info)
    return files


@pytest.mark.parametrize(("size", "filename"), [(28, "bloodmnist.npz"), (64, "bloodmnist_64.npz")])
def test_bloodmnist_by_name_then_load(
    server: Server, fake_bloodmnist: dict[int, bytes], tmp_path: Path, size: int, filename: str
) -> None:
    from bloodcls.data.medmnist_source import load_bloodmnist

    dest = tmp_path / "medmnist"
    path = download("bloodmnist", dest, size=size)
    assert path == dest / filename
    assert path.read_bytes() == fake_bloodmnist[size]
    download("BloodMNIST", dest, size=size)  # names are case-insensitive; second call is a no-op
    assert server.hits[f"/{filename}"] == 1

    ds = load_bloodmnist(dest, size=size)
    assert ds.images.shape == (10, size, size, 3) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (10,) and ds.labels.dtype == np.int64
    assert ds.class_names == [
        "basophil",
        "eosinophil",
        "erythroblast",
        "ig",
        "lymphocyte",
        "monocyte",
        "neutrophil",
        "platelet",
    ]
    assert ds.official_split.tolist() == ["train"] * 5 + ["val"] * 2 + ["test"] * 3
    assert ds.ids[0] == f"bloodmnist_{size}/train/0" and ds.ids[-1] == f"bloodmnist_{size}/test/2"


def test_bloodmnist_bad_md5_from_server(server: Server, fake_bloodmnist: dict[int, bytes], tmp_path: Path) -> None:
    (server.root / "bloodmnist.npz").write_bytes(b"tampered")
    with pytest.raises(DownloadError, match="md5 expected"):
        download("bloodmnist", tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []


@pytest.mark.parametrize("size", [32, 0, 256])
def test_bloodmnist_unsupported_size(tmp_path: Path, size: int) -> None:
    with pytest.raises(ValueError, match=f"unsupported --size {size}; expected one of 28, 64, 128, 224"):
        download("bloodmnist", tmp_path, size=size)


# --- download_main -----------------------------------------------------------------------------------


def test_main_success_prints_one_line(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = server.publish("payload.bin", PAYLOAD)
    download_main([url, "--dest", str(tmp_path), "--sha256", sha256_of(PAYLOAD)])
    out = capsys.readouterr().out
    assert out == f"bloodcls download: wrote {tmp_path / 'payload.bin'}\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{url}", "--dest", "{dest}"], "a checksum is required"),
        (["{url}", "--dest", "{dest}", "--sha256", "0" * 64], "checksum mismatch"),
        (["{url}", "--dest", "{dest}", "--md5", "0" * 64], "--md5 must be 32 hex characters"),
        (["{url}", "--dest", "{dest}", "--md5", "0" * 32, "--size", "64"], "--size only applies"),
        (["bloodmnist", "--dest", "{dest}", "--size", "100"], "unsupported --size 100"),
        (["nosuchmnist", "--dest", "{dest}"], "unknown dataset 'nosuchmnist'"),
    ],
)
def test_main_errors_exit_2_with_one_line(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    url = server.publish("payload.bin", PAYLOAD)
    args = [a.format(url=url, dest=tmp_path / "dest") for a in argv]
    with pytest.raises(SystemExit) as excinfo:
        download_main(args)
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("bloodcls download: error: ")
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


# --- URLs that name no file, and a rename that fails -----------------------------------------------------


@pytest.mark.parametrize("tail", ["payload.bin/..", "payload.bin/%2e%2e", "a/..%2F..", "payload.bin/.", "x%5C..%5Cy"])
def test_url_ending_in_a_dot_segment_is_one_line_and_leaves_nothing(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], tail: str
) -> None:
    server.publish("payload.bin", PAYLOAD)
    dest = tmp_path / "dest"
    with pytest.raises(SystemExit) as excinfo:
        download_main([f"{server.url}/{tail}", "--dest", str(dest), "--sha256", sha256_of(PAYLOAD)])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("bloodcls download: error: ") and "not a file name" in err
    assert err.count("\n") == 1 and "Busy" not in err
    assert not dest.exists() or not any(dest.rglob("*"))  # no .part, nothing written
    assert not list(tmp_path.glob("*.part")) and sum(server.hits.values()) == 0  # refused before fetching


def test_download_file_onto_a_directory_is_refused(server: Server, tmp_path: Path) -> None:
    url = server.publish("payload.bin", PAYLOAD)
    (tmp_path / "payload.bin").mkdir()
    with pytest.raises(DownloadError, match="is a directory"):
        download_file(url, tmp_path / "payload.bin", sha256=sha256_of(PAYLOAD))
    assert not list(tmp_path.rglob("*.part"))


def test_failed_rename_removes_the_part_file(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    url = server.publish("payload.bin", PAYLOAD)

    def busy(src: object, dst: object) -> None:
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(dst))

    monkeypatch.setattr("bloodcls.commands.download.os.replace", busy)
    with pytest.raises(DownloadError, match="cannot save to"):
        download_file(url, tmp_path / "dest" / "payload.bin", sha256=sha256_of(PAYLOAD))
    assert all_files(tmp_path / "dest") == set()
