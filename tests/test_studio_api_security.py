"""The studio's door (issue 18, item 5): the token, same-origin and Host checks, the body limit, and paths that
try to leave the served folders; then ``edge-tsm studio`` as a user starts it (a real uvicorn on a free port).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tinymodel import build_tiny_bundle, write_colour_video
from waiting import Follow, wait_until

pytest.importorskip("starlette", reason="the studio extra is not installed (pip install -e '.[studio]')")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (pip install -e '.[dev]')")

from starlette.testclient import TestClient  # noqa: E402

from edge.studio.app import create_app  # noqa: E402
from edge.studio.settings import StudioSettings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PORT = 8765
BASE = f"http://127.0.0.1:{PORT}"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("door")
    bundle = build_tiny_bundle(tmp / "tiny")
    data = tmp / "data"
    (data / "red").mkdir(parents=True)
    write_colour_video(data / "red" / "a.avi", script=(("red", 4),))
    outside = tmp / "outside"
    outside.mkdir()
    write_colour_video(outside / "secret.avi", script=(("blue", 4),))
    (data / "red" / "link.avi").symlink_to(outside / "secret.avi")        # a file linked out of the folder
    (data / "escape").symlink_to(outside, target_is_directory=True)       # a folder linked out
    (data / "red" / "inner.avi").symlink_to(data / "red" / "a.avi")       # a link that stays inside
    work = tmp / "work"
    work.mkdir()
    return {"tmp": tmp, "bundle": bundle, "data": data, "work": work, "outside": outside}


def client_for(f, host="127.0.0.1", **kw):
    s = StudioSettings({"data": f["data"], "work": f["work"]}, model=str(f["bundle"]), host=host, port=PORT,
                       cache_dir=f["tmp"] / "cache", **kw)
    return s, TestClient(create_app(s), base_url=f"http://{host}:{PORT}")


@pytest.fixture(scope="module")
def local(folders):
    s, c = client_for(folders)
    with c:
        yield s, c


def test_loopback_reads_need_no_token_but_every_post_needs_token_and_origin(local, caplog):
    s, c = local
    assert c.get("/api/library").status_code == 200
    body = {"name": "wave"}
    r = c.post("/api/classes", json=body, headers={"Origin": BASE})
    assert r.status_code == 403 and "token" in r.json()["error"]
    r = c.post("/api/classes", json=body, headers={"X-Studio-Token": "wrong", "Origin": BASE})
    assert r.status_code == 403
    for origin in ("http://evil.example", "null", f"https://127.0.0.1:{PORT}", "http://127.0.0.1:9999"):
        r = c.post("/api/classes", json=body, headers={"X-Studio-Token": s.token, "Origin": origin})
        assert r.status_code == 403 and "origin" in r.json()["error"], origin
    r = c.post("/api/classes", json=body, headers={"X-Studio-Token": s.token})   # no Origin, no Sec-Fetch-Site
    assert r.status_code == 403
    r = c.post("/api/classes", json=body, headers={"X-Studio-Token": s.token, "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    assert not (Path(s.folders["work"]) / "classes.txt").exists()
    ok = c.post("/api/classes", json=body, headers={"X-Studio-Token": s.token, "Origin": BASE})
    assert ok.status_code == 200 and "wave" in ok.json()["classes"]
    ok = c.post("/api/classes", json={"name": "clap"}, headers={"X-Studio-Token": s.token,
                                                               "Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 200


def test_the_token_in_the_url_becomes_a_strict_cookie(local):
    s, c = local
    r = c.get("/api/library", params={"token": s.token})
    cookie = r.headers["set-cookie"]
    assert f"studio_token={s.token}" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    fresh = TestClient(c.app, base_url=BASE, cookies={"studio_token": s.token})
    assert fresh.post("/api/classes", json={"name": "nod"}, headers={"Origin": BASE}).status_code == 200
    assert "set-cookie" not in c.get("/api/library", params={"token": "wrong"}).headers


def test_a_foreign_host_header_is_refused_on_loopback(local):
    s, c = local
    for host in ("evil.example", f"evil.example:{PORT}", "127.0.0.1:1", "localhost"):
        r = c.get("/api/library", headers={"Host": host})
        assert r.status_code == 403 and "host" in r.json()["error"], host
    assert c.get("/api/library", headers={"Host": f"localhost:{PORT}"}).status_code == 200


def test_off_loopback_every_request_needs_the_token(folders):
    s, c = client_for(folders, host="0.0.0.0")
    with c:
        for url in ("/api/library", "/", "/api/video/frame?path=data/red/a.avi&i=0"):
            r = c.get(url)
            assert r.status_code == 403 and "token" in r.json()["error"], url
        assert c.get("/api/library", headers={"X-Studio-Token": s.token}).status_code == 200
        assert c.get("/api/library", params={"token": s.token}, headers={"Host": "192.0.2.7:8765"}).status_code == 200


def test_request_bodies_are_size_limited(local):
    s, c = local
    h = {"X-Studio-Token": s.token, "Origin": BASE}
    big = json.dumps({"name": "x" * (s.max_body + 10)})
    r = c.post("/api/classes", content=big, headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 413

    def chunks():   # no Content-Length: counted as it comes
        for _ in range(s.max_body // 65536 + 2):
            yield b" " * 65536
    r = c.post("/api/classes", content=chunks(), headers=h)
    assert r.status_code == 413
    assert c.post("/api/classes", content=b"{not json", headers=h).status_code == 400
    assert c.post("/api/classes", content=b"[1, 2]", headers=h).status_code == 400


@pytest.mark.parametrize("ref", [
    "data/../outside/secret.avi", "data/red/../../outside/secret.avi", "../outside/secret.avi",
    "/etc/passwd", "data//etc/passwd", "data/red/link.avi", "data/escape/secret.avi", "data/red/%2e%2e/%2e%2e/x",
    "data/red/..%2f..%2foutside/secret.avi", "data\\red\\a.avi", "data/red/a.avi\x00.txt", "spool/x.avi",
    "work/../data/red/a.avi", "data", "data/", "data/red", "", "nowhere/a.avi", "data/red/missing.avi",
])
def test_paths_outside_the_folders_are_404(local, ref):
    s, c = local
    for url, params in (("/api/video/info", {"path": ref}), ("/api/video/frame", {"path": ref, "i": 0}),
                        ("/api/scores", {"path": ref})):
        r = c.get(url, params=params)
        assert r.status_code == 404, (url, ref, r.text)
        assert "secret" not in r.text or "secret" in ref
    # a URL-encoded path, decoded once by the server and no more
    raw = c.get("/api/video/info?path=data%2F..%2Foutside%2Fsecret.avi")
    assert raw.status_code == 404
    twice = c.get("/api/video/info?path=data%252F..%252Foutside%252Fsecret.avi")
    assert twice.status_code == 404


def test_links_that_stay_inside_and_static_files_are_served(local):
    s, c = local
    assert c.get("/api/video/info", params={"path": "data/red/inner.avi"}).json()["frames"] == 4
    assert c.get("/api/video/info", params={"path": "data/red/a.avi"}).json()["frames"] == 4
    page = c.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert c.get("/../../etc/passwd").status_code == 404
    assert c.get("/api/nothing").status_code == 404


def test_edge_tsm_studio_prints_its_url_and_serves_on_a_real_socket(folders):
    proc = subprocess.Popen([sys.executable, "-m", "edge", "studio", "--data", str(folders["data"]), "--work",
                             str(folders["work"]), "--model", str(folders["bundle"]), "--port", "0"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    out, err = Follow(proc.stdout), Follow(proc.stderr)
    try:
        line = wait_until(lambda: next((x for x in out.lines if x.startswith("studio: ")), None), timeout=30,
                          proc=proc, output=lambda: err.text)
        url = line.split(" ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:") and "?token=" in url
        base, token = url.split("/?token=")
        with urllib.request.urlopen(f"{base}/api/library", timeout=10) as r:
            # the links out (a folder, a file) are not listed; the link inside is
            assert json.loads(r.read())["dataset"]["classes"] == [{"name": "red", "clips": 2}]
        post = urllib.request.Request(f"{base}/api/classes", data=b'{"name": "zz"}', method="POST",
                                      headers={"Content-Type": "application/json", "Origin": base})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(post, timeout=10)
        assert e.value.code == 403
        post.add_header("X-Studio-Token", token)
        with urllib.request.urlopen(post, timeout=10) as r:
            assert "zz" in json.loads(r.read())["classes"]
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert proc.returncode == 0, err.join()


def test_a_missing_folder_or_a_busy_port_is_one_line(folders, tmp_path):
    from edge.cli import main
    assert main(["studio", "--data", str(tmp_path / "nope")]) == 66
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        assert main(["studio", "--data", str(folders["data"]), "--work", str(tmp_path / "w"),
                     "--port", str(taken.getsockname()[1])]) == 64
