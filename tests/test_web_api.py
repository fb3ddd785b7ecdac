"""The web service's JSON API: a real protect job end to end, every hostile input refused with its 4xx (and the
server answering afterwards), the queue limit, result expiry, CORS, request timeouts, and 20 concurrent uploads
to a live loopback server."""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from onlymine import io as oio  # noqa: E402
from onlymine import threats  # noqa: E402
from onlymine.web import ServerConfig, create_app  # noqa: E402
from onlymine.web.jobs import Job  # noqa: E402

PRESET = {"fast": {"preset": "low", "steps": 2}}  # eps 4/255; two steps keeps the tests quick
EPS_255 = 4


def cheap_config(**changes) -> ServerConfig:
    """A server with the real models and a cheap preset; one unauthorized judge to keep jobs fast."""
    base = dict(presets=PRESET, unauthorized=("efficientnet-lite:lite0",), max_files=3,
                max_upload_bytes=600_000, max_request_bytes=2_000_000, max_pixels=1_000_000, queue_limit=8,
                workers=1, torch_threads=1, result_ttl_s=600)
    base.update(changes)
    return ServerConfig(**base)


@pytest.fixture(scope="module")
def photos(sample_photos: list[Path]) -> list[Path]:
    return sample_photos


@pytest.fixture(scope="module")
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def client(restore_threads, tmp_path_factory):
    app = create_app(cheap_config(data_dir=tmp_path_factory.mktemp("jobs")))
    with TestClient(app) as c:
        yield c


def wait_done(client, url: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(url).json()
        if job["state"] in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, f"job still {job['state']} after {timeout}s"
        time.sleep(0.3)


def jpeg_with_gps(path: Path) -> bytes:
    """A kit photo re-encoded as JPEG carrying EXIF with a camera model and GPS position."""
    with Image.open(path) as im:
        exif = Image.Exif()
        exif[0x0110] = "SecretCam 3000"  # Model
        exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)}  # GPS IFD
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "JPEG", quality=95, exif=exif)
    return buf.getvalue()


def png_bytes(path: Path) -> bytes:
    buf = io.BytesIO()
    with Image.open(path) as im:
        im.convert("RGB").save(buf, "PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- the happy path


def test_config_and_openapi_expose_names_only(client):
    cfg = client.get("/api/config").json()
    assert cfg["authorized"] == ["torchvision:mobilenet_v2"]
    assert cfg["unauthorized"] == ["efficientnet-lite:lite0"]
    assert cfg["presets"]["fast"]["steps"] == 2 and cfg["presets"]["fast"]["eps_255"] == EPS_255
    assert "data_dir" not in str(cfg)
    spec = client.get("/openapi.json").json()
    upload = spec["paths"]["/api/jobs"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert {"429", "413", "415"} <= set(upload["responses"])
    assert "/api/jobs/{job_id}" in spec["paths"] and "/api/jobs/{job_id}/zip" in spec["paths"]
    page = client.get("/")
    assert page.status_code == 200 and "app.js" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_protect_job_end_to_end(client, photos):
    """A JPEG with GPS EXIF and a PNG misnamed .jpg: both protected, verified, metadata-free, within eps."""
    jpeg, png = jpeg_with_gps(photos[0]), png_bytes(photos[1])
    r = client.post("/api/jobs", files=[("files", ("holiday.jpeg", jpeg, "image/jpeg")),
                                        ("files", ("renamed.jpg", png, "image/jpeg"))],
                    data={"model": "torchvision:mobilenet_v2", "preset": "fast"})
    assert r.status_code == 202, r.text
    job = r.json()
    folder = client.app.state.jobs.root / job["id"]
    # stored under server names, with the suffix of the detected content (the PNG is stored as .png)
    assert sorted(p.name for p in (folder / "in").iterdir()) == ["000.jpg", "001.png"]
    job = wait_done(client, job["status_url"])
    assert job["state"] == "done" and job["progress"] == {"done": 2, "total": 2}
    originals = [Image.open(io.BytesIO(b)).convert("RGB") for b in (jpeg, png)]
    for img, original in zip(job["images"], originals, strict=True):
        assert img["status"] == "ok", img
        assert img["authorized"]["kept"] and img["authorized"]["model"] == "torchvision:mobilenet_v2"
        assert [u["model"] for u in img["unauthorized"]] == ["efficientnet-lite:lite0"]
        for u in img["unauthorized"]:  # judged through the whole threat suite; its crop is the published pipeline
            assert list(u["threats"]) == list(threats.NAMES)
            assert all(0 <= k <= 1 for k in u["threats"].values()) and u["threats"]["crop"] == float(u["kept"])
        assert 0 < img["quality"]["linf_255"] <= EPS_255 and img["quality"]["psnr"] > 30
        out = client.get(img["protected_url"])
        assert out.status_code == 200 and out.headers["content-type"] == "image/png"
        assert "attachment" in out.headers["content-disposition"]
        protected = Image.open(io.BytesIO(out.content))
        assert protected.format == "PNG" and protected.size == original.size
        assert not protected.getexif() and "exif" not in protected.info and not getattr(protected, "text", {})
        diff = np.abs(np.asarray(protected.convert("RGB"), np.int16) - np.asarray(original, np.int16))
        assert 0 < diff.max() <= EPS_255
        for kind in ("before_url", "diff_url"):
            assert client.get(img[kind]).headers["content-type"] == "image/jpeg"
    assert b"SecretCam" not in client.get(job["images"][0]["protected_url"]).content
    z = zipfile.ZipFile(io.BytesIO(client.get(job["zip_url"]).content))
    assert sorted(z.namelist()) == ["holiday-protected.png", "renamed-protected.png"]
    assert z.read("holiday-protected.png") == client.get(job["images"][0]["protected_url"]).content
    # deleting removes the files at once
    assert client.delete(job["status_url"]).status_code == 204
    assert not folder.exists()
    assert client.get(job["status_url"]).status_code == 404


# ------------------------------------------------------------------------------------------- hostile input


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's announcement), with no pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _big_noise_png(n_bytes: int) -> bytes:
    side = int((n_bytes / 3) ** 0.5) + 8
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG", compress_level=0)
    return buf.getvalue()


def _raw_part(disposition: bytes, content: bytes) -> bytes:
    """A multipart body (boundary ``b``) with one part, byte for byte as given (no client-side escaping)."""
    return b"--b\r\nContent-Disposition: form-data; " + disposition + b"\r\n\r\n" + content + b"\r\n--b--\r\n"


@pytest.fixture(scope="module")
def small_jpeg(photos) -> bytes:
    return photos[2].read_bytes()


HOSTILE = {
    # name: (files, form data, expected status, words in the message)
    "file too large": (lambda j: [("files", ("big.png", _big_noise_png(700_000)))], {}, 413, "bytes per file"),
    "request too large": (lambda j: [("files", (f"{i}.png", _big_noise_png(500_000))) for i in range(3)] +
                          [("files", ("x.png", _big_noise_png(500_000)))], {}, 413, "request body"),
    "too many pixels": (lambda j: [("files", ("wide.png", _png_header_only(1200, 1000)))], {}, 413, "pixels"),
    "bomb header": (lambda j: [("files", ("bomb.png", _png_header_only(100_000, 100_000)))], {}, 413, "pixels"),
    "text named png": (lambda j: [("files", ("evil.png", b"this is not an image at all\n" * 20))], {}, 415,
                       "not a supported image"),
    "html named jpg": (lambda j: [("files", ("x.jpg", b"<html><script>alert(1)</script></html>"))], {}, 415,
                       "content checked"),
    "svg": (lambda j: [("files", ("x.png", b'<svg xmlns="http://www.w3.org/2000/svg"/>'))], {}, 415, "supported"),
    "truncated jpeg": (lambda j: [("files", ("half.jpg", j[: len(j) // 2]))], {}, 422, "half.jpg"),
    "empty file": (lambda j: [("files", ("empty.png", b""))], {}, 400, "empty"),
    "path traversal": (lambda j: [("files", ("../../etc/passwd.png", j))], {}, 400, "contains a path"),
    "windows traversal": (lambda j: [("files", ("..\\..\\boot.ini.jpg", j))], {}, 400, "contains a path"),
    "control characters": (lambda j: _raw_part(b'name="files"; filename="a\x01b.jpg"', j), {}, 400,
                           "control characters"),
    "unknown model": (lambda j: [("files", ("a.jpg", j))], {"model": "torchvision:resnet18"}, 400,
                      "not offered by this server"),
    "model path": (lambda j: [("files", ("a.jpg", j))], {"model": "onnx:/tmp/evil.onnx"}, 400,
                   "paths are never accepted"),
    "model file name": (lambda j: [("files", ("a.jpg", j))], {"model": "../weights/evil.pth"}, 400,
                        "paths are never accepted"),
    "model_path field": (lambda j: [("files", ("a.jpg", j))], {"model_path": "/tmp/evil.onnx"}, 400,
                         "unknown form field"),
    "model as a file": (lambda j: [("files", ("a.jpg", j)), ("model", ("evil.onnx", b"\x08\x01"))], {}, 400,
                        "text fields"),
    "unknown preset": (lambda j: [("files", ("a.jpg", j))], {"preset": "extreme"}, 400, "unknown preset"),
    "too many files": (lambda j: [("files", (f"{i}.jpg", j)) for i in range(4)], {}, 413, "too many files"),
    "no files": (lambda j: _raw_part(b'name="model"', b"torchvision:mobilenet_v2"), {}, 400, "no photos"),
    "files as text": (lambda j: _raw_part(b'name="files"', b"hello"), {}, 400, "uploaded files"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_upload_refused_and_server_keeps_serving(client, small_jpeg, case):
    make, data, status, words = HOSTILE[case]
    files = make(small_jpeg)
    if isinstance(files, bytes):  # a hand-made multipart body
        r = client.post("/api/jobs", headers={"content-type": "multipart/form-data; boundary=b"}, content=files)
    else:
        r = client.post("/api/jobs", files=files, data=data)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"], r.json()
    assert "\n" not in r.json()["detail"]
    assert client.get("/api/health").json()["status"] == "ok"
    assert client.get("/api/health").json()["jobs"] == 0  # nothing was queued or left behind
    assert not list(client.app.state.jobs.root.iterdir())


RAW = {
    "garbage multipart": ("multipart/form-data; boundary=xyz", b"--xyz\r\nthis is not a part header\r\n\r\n",
                          400, "malformed multipart"),
    "missing boundary": ("multipart/form-data", b"whatever", 400, "malformed multipart"),
    "not multipart": ("application/json", b'{"files": ["/etc/passwd"]}', 415, "multipart/form-data"),
}


@pytest.mark.parametrize("case", list(RAW))
def test_malformed_requests_refused(client, case):
    ctype, body, status, words = RAW[case]
    r = client.post("/api/jobs", content=body, headers={"content-type": ctype})
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert client.get("/api/health").status_code == 200


def test_bad_job_ids_and_file_requests(client):
    assert client.get("/api/jobs/..%2F..%2Fetc%2Fpasswd").status_code in (404, 422)
    r = client.get("/api/jobs/not-a-job")
    assert r.status_code == 422 and isinstance(r.json()["detail"], str) and "job_id" in r.json()["detail"]
    r = client.get("/api/jobs/" + "0" * 32)
    assert r.status_code == 404 and "not found" in r.json()["detail"]
    assert client.get("/api/jobs/" + "0" * 32 + "/images/0/protected").status_code == 404
    assert client.get("/static/../config.py").status_code == 404


def test_cors_off_by_default(client):
    r = client.get("/api/config", headers={"Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    pre = client.options("/api/jobs", headers={"Origin": "https://evil.example",
                                               "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers


def test_cors_when_configured(restore_threads):
    app = create_app(cheap_config(cors_origins=("https://photos.example",)))
    with TestClient(app) as c:
        ok = c.get("/api/config", headers={"Origin": "https://photos.example"})
        assert ok.headers["access-control-allow-origin"] == "https://photos.example"
        other = c.get("/api/config", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="preset 'x'"):
        ServerConfig(presets={"x": {"steps": "many", "nonsense": 1}})
    with pytest.raises(ValueError, match="authorized"):
        ServerConfig(authorized=())
    env = {"ONLYMINE_SERVE_WORKERS": "3", "ONLYMINE_SERVE_UNAUTHORIZED": "efficientnet-lite:lite1, a:b",
           "ONLYMINE_SERVE_PRESETS": '{"quick": {"preset": "low", "steps": 5}}'}
    cfg = ServerConfig.from_env(env, queue_limit=4)
    assert cfg.workers == 3 and cfg.queue_limit == 4 and cfg.unauthorized == ("efficientnet-lite:lite1", "a:b")
    assert cfg.default_preset == "quick" and cfg.settings(cfg.authorized[0], "quick").config.steps == 5


# ------------------------------------------------------------------------------------------- queue and expiry


def test_a_name_of_dots_is_a_name_not_a_path(client, small_jpeg):
    r = client.post("/api/jobs", files=[("files", ("....png", small_jpeg, "image/jpeg"))],
                    data={"model": "torchvision:mobilenet_v2", "preset": "fast"})
    assert r.status_code == 202, r.text
    job = wait_done(client, r.json()["status_url"])
    assert job["images"][0]["name"] == "....png" and job["images"][0]["status"] == "ok"
    client.delete(r.json()["status_url"])


def test_deleting_a_running_job_stops_it_between_steps_and_frees_the_worker(small_jpeg, restore_threads, tmp_path):
    """A long job (many steps) is cancelled by DELETE: its worker stops between two attack steps, its files are
    deleted, and the only worker takes the next job at once."""
    slow = {"fast": {"preset": "low", "steps": 2}, "slow": {"preset": "high", "steps": 5000}}
    with TestClient(create_app(cheap_config(presets=slow, data_dir=tmp_path))) as c:
        form = {"model": "torchvision:mobilenet_v2", "preset": "slow"}
        files = [("files", ("a.jpg", small_jpeg, "image/jpeg"))]
        url = c.post("/api/jobs", files=files, data=form).json()["status_url"]
        deadline = time.monotonic() + 120
        while c.get(url).json()["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        folder = c.app.state.jobs.root / url.rsplit("/", 1)[-1]
        t0 = time.monotonic()
        assert c.delete(url).status_code == 204
        while folder.exists():
            assert time.monotonic() - t0 < 60, "the cancelled job kept its worker"
            time.sleep(0.1)
        assert c.get(url).status_code == 404
        form["preset"] = "fast"
        nxt = c.post("/api/jobs", files=[("files", ("b.jpg", small_jpeg, "image/jpeg"))], data=form).json()
        assert wait_done(c, nxt["status_url"], timeout=120)["state"] == "done"


class GatedRunner:
    """A stand-in worker for queue tests: writes a copy of the input as the result once ``gate`` opens."""

    gate = threading.Event()

    def __init__(self, config: ServerConfig) -> None:
        self.config = config

    def preload(self) -> None:
        pass

    def run(self, job: Job, deadline: float) -> None:
        assert self.gate.wait(60)
        job.out_dir.mkdir(exist_ok=True)
        for i, up in enumerate(job.uploads):
            oio.save_image(job.out_dir / f"{i:03d}.png", oio.load_image(up.path).rgb, overwrite=True)
            job.set_result(i, {"index": i, "name": up.name, "status": "ok", "width": up.width, "height": up.height})


def test_queue_full_gets_429_and_nothing_is_lost(small_jpeg, restore_threads):
    GatedRunner.gate.clear()
    app = create_app(cheap_config(queue_limit=2, workers=1), runner_factory=GatedRunner)
    with TestClient(app) as c:
        ids = []
        for _ in range(3):  # one running, two waiting
            r = c.post("/api/jobs", files=[("files", ("a.jpg", small_jpeg))])
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
            time.sleep(0.2)
        full = c.post("/api/jobs", files=[("files", ("a.jpg", small_jpeg))])
        assert full.status_code == 429 and "retry later" in full.json()["detail"]
        assert int(full.headers["Retry-After"]) > 0
        assert c.get("/api/health").json()["waiting"] == 2
        GatedRunner.gate.set()
        for job_id in ids:
            assert wait_done(c, f"/api/jobs/{job_id}", timeout=30)["state"] == "done"
        assert c.post("/api/jobs", files=[("files", ("a.jpg", small_jpeg))]).status_code == 202


def test_results_expire_and_are_deleted(small_jpeg, restore_threads):
    GatedRunner.gate.set()
    app = create_app(cheap_config(result_ttl_s=1.0), runner_factory=GatedRunner)
    with TestClient(app) as c:
        job = c.post("/api/jobs", files=[("files", ("a.jpg", small_jpeg))]).json()
        done = wait_done(c, job["status_url"], timeout=30)
        folder = app.state.jobs.root / job["id"]
        assert folder.is_dir() and done["expires"] - done["finished"] == pytest.approx(1.0)
        deadline = time.monotonic() + 10
        while folder.exists() and time.monotonic() < deadline:  # the sweeper deletes it without any request
            time.sleep(0.1)
        assert not folder.exists()
        assert c.get(job["status_url"]).status_code == 404


def test_a_crashing_job_does_not_stop_the_worker(small_jpeg, restore_threads):
    class Flaky(GatedRunner):
        calls = 0

        def run(self, job: Job, deadline: float) -> None:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("boom")
            super().run(job, deadline)

    GatedRunner.gate.set()
    with TestClient(create_app(cheap_config(), runner_factory=Flaky)) as c:
        first = wait_done(c, c.post("/api/jobs", files=[("files", ("a.jpg", small_jpeg))]).json()["status_url"])
        assert first["state"] == "failed" and "boom" in first["message"]
        second = wait_done(c, c.post("/api/jobs", files=[("files", ("a.jpg", small_jpeg))]).json()["status_url"])
        assert second["state"] == "done"


# ------------------------------------------------------------------------------------------- live server


@pytest.fixture(scope="module")
def live_server(restore_threads, tmp_path_factory):
    from onlymine.web.server import background_server

    cfg = cheap_config(workers=2, queue_limit=32, max_files=20, request_timeout_s=2.0,
                       data_dir=tmp_path_factory.mktemp("live"))
    with background_server(cfg) as url:
        yield url


def test_slow_request_times_out_with_408(live_server):
    port = int(live_server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: 100000\r\n\r\n--b\r\n")  # then never sends the rest
        t0 = time.monotonic()
        reply = b""
        while chunk := s.recv(4096):  # the server answers, then closes the connection
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"longer than 2 s" in reply and time.monotonic() - t0 < 10
    import httpx

    assert httpx.get(live_server + "/api/health", timeout=10).json()["status"] == "ok"


def test_twenty_concurrent_uploads_all_complete_correctly(live_server, photos):
    from onlymine.web.loadtest import run_load

    report = run_load(live_server, photos[:20], n=20, timeout_s=300, eps_255=EPS_255)
    bad = [r for r in report.results if not r.correct]
    assert not bad, bad
    assert report.completed == report.correct == report.distinct_jobs == 20 and report.lost == 0
    assert 0 < report.max_linf_255 <= EPS_255
    assert {r.file for r in report.results} == {p.name for p in photos[:20]}
    assert report.peak_rss_mb - report.start_rss_mb < 2000, report  # bounded: models + one image per worker


def test_load_test_refuses_other_hosts(photos):
    from onlymine.web.loadtest import run_load

    with pytest.raises(ValueError, match="only run against this machine"):
        run_load("http://example.com:8000", photos[:1], n=1)
