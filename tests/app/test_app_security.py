"""The app's security: the token on every request but the login page, CSRF, uploads, names, traversal."""

from __future__ import annotations

import io
import json
import os
import zipfile

import pytest
from app_helpers import TOKEN, create_project, csrf, make_client, png_bytes, upload

from activelab.app.uploads import Limits, sanitise_name

CLASSES = ("<script>alert(1)</script>", "boot")


@pytest.fixture()
def client(tmp_path):
    client = make_client(tmp_path / "project")
    create_project(client, CLASSES)
    return client


def test_every_request_but_the_login_page_needs_the_token(tmp_path):
    anonymous = make_client(tmp_path / "project", login=False)
    assert anonymous.get("/login").status_code == 200
    browser = {"accept": "text/html"}
    assert anonymous.get("/", headers=browser, follow_redirects=False).headers["location"] == "/login"
    for path in ("/api/status", "/static/htmx.min.js", "/images/0", "/export/labels.csv", "/plot.png", "/job"):
        assert anonymous.get(path).status_code == 401, path
    assert anonymous.post("/api/label", json={"id": 0, "label": 0}).status_code == 401
    wrong = anonymous.get("/login?token=" + TOKEN[:-1] + "x", follow_redirects=False)
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    assert anonymous.post("/login", data={"token": "nope"}).status_code == 401
    anonymous.cookies.set("activelab_session", TOKEN)  # the token itself is not a session
    assert anonymous.get("/api/job").status_code == 401
    assert anonymous.get("/api/job", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert anonymous.get("/api/job", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    anonymous.cookies.clear()
    logged = anonymous.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert logged.status_code == 303 and "HttpOnly" in logged.headers["set-cookie"]
    assert "SameSite=strict" in logged.headers["set-cookie"]
    answer = anonymous.get("/setup")
    assert answer.status_code == 200 and "default-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY" and answer.headers["referrer-policy"] == "no-referrer"


def test_changes_need_the_csrf_token(tmp_path):
    client = make_client(tmp_path / "project")
    form = {"name": "p", "classes": "a\nb"}
    assert client.post("/setup", data=form).status_code == 403
    assert client.post("/setup", data={**form, "csrf_token": "forged"}).status_code == 403
    assert not (tmp_path / "project" / "project.json").exists()
    create_project(client, ("a", "b"))
    assert client.post("/api/label", json={"id": 0, "label": 0}).status_code == 403
    assert client.post("/api/label", json={"id": 0, "label": 0}, headers={"X-CSRF-Token": "x"}).status_code == 403
    files = [("files", ("a.png", png_bytes(), "image/png"))]
    assert client.post("/upload", files=files).status_code == 403
    assert client.post("/upload", files=files, data={"csrf_token": "forged"}).status_code == 403
    assert client.get("/api/status").json()["images"] == 0


def test_class_names_and_file_names_are_escaped_everywhere(client):
    name = "<img src=x onerror=alert(1)>.png"
    answer = client.post("/upload", files=[("files", (name, png_bytes(1), "image/png"))],
                         data={"csrf_token": client.app.state.secrets.csrf})
    assert answer.status_code == 200, answer.text
    for path in ("/", "/label", "/summary"):
        page = client.get(path).text
        assert "<script>alert" not in page and "<img src=x" not in page, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get("/").text
    assert "\\u003cscript\\u003e" in client.get("/label").text  # inside the page's JSON data
    stored = client.get("/api/status").json()
    assert stored["classes"][0] == CLASSES[0]  # kept as given, escaped when shown
    assert client.get("/api/status").json()["images"] == 1
    message = client.post("/upload", files=[("files", (name, b"not an image", "image/png"))],
                          data={"csrf_token": client.app.state.secrets.csrf}, headers={"HX-Request": "true"})
    assert message.status_code == 400 and "<img" not in message.text and "&lt;img" not in message.text


def test_a_traversal_name_is_stored_under_its_hash_and_shown_without_folders(client, tmp_path):
    answer = upload_named(client, "../../x.png", png_bytes(2))
    assert answer.status_code == 200, answer.text
    project = tmp_path / "project"
    items = json.loads((project / "project.json").read_text())["items"]
    assert items[-1]["name"] == "x.png" and items[-1]["file"].endswith(".png") and "/" not in items[-1]["file"]
    assert not (tmp_path / "x.png").exists() and not (project.parent.parent / "x.png").exists()
    assert sorted(os.listdir(project / "images")) == [items[-1]["file"]]
    assert sanitise_name("..\\..\\evil\x00<b>.png") == "evil_b_.png" and sanitise_name("...") == "image"


def upload_named(client, name: str, data: bytes, **headers):
    return client.post("/upload", files=[("files", (name, data, "image/png"))],
                       data={"csrf_token": client.app.state.secrets.csrf}, headers=headers)


def test_a_text_file_renamed_png_is_refused(client, tmp_path):
    answer = upload_named(client, "notes.png", b"just some text\n" * 20)
    assert answer.status_code == 400 and answer.json()["error"].endswith("is not an image (its content does not "
                                                                          "decode as PNG, JPEG, GIF, BMP, TIFF or WebP).")
    truncated = upload_named(client, "cut.png", png_bytes(3)[:60])
    assert truncated.status_code == 400
    mixed = client.post("/upload", files=[("files", ("ok.png", png_bytes(4), "image/png")),
                                          ("files", ("bad.png", b"GIF89a nonsense", "image/png"))],
                        data={"csrf_token": client.app.state.secrets.csrf})
    assert mixed.status_code == 200 and mixed.json()["rejected"][0]["name"] == "bad.png"
    assert client.get("/api/status").json()["images"] == 1
    assert os.listdir(tmp_path / "project" / "images") == [json.loads(
        (tmp_path / "project" / "project.json").read_text())["items"][0]["file"]]


def test_oversized_and_too_many_uploads_are_refused(tmp_path):
    limits = Limits(max_file_bytes=5_000, max_files=3, max_request_bytes=60_000)
    client = make_client(tmp_path / "project", limits=limits)
    create_project(client, ("a", "b"))
    big = png_bytes(5, size=200)  # about 40 kB of noise
    assert len(big) > limits.max_file_bytes
    answer = upload_named(client, "big.png", big)
    assert answer.status_code == 400 and "larger than the limit" in answer.json()["error"]
    huge = upload_named(client, "huge.png", png_bytes(6, size=400))
    assert huge.status_code == 413 and "larger than the limit" in huge.text
    files = [("files", (f"{index}.png", png_bytes(index), "image/png")) for index in range(4)]
    too_many = client.post("/upload", files=files, data={"csrf_token": client.app.state.secrets.csrf})
    assert too_many.status_code == 400 and "at most 3 files" in too_many.json()["error"]
    assert client.get("/api/status").json()["images"] == 0


def test_a_zip_upload_takes_its_images_and_refuses_the_rest(client):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("pics/one.png", png_bytes(10))
        archive.writestr("../../two.png", png_bytes(11))
        archive.writestr("three.png", b"text pretending")
        archive.writestr("readme.txt", b"hello")
    answer = client.post("/upload", files=[("files", ("batch.zip", buffer.getvalue(), "application/zip"))],
                         data={"csrf_token": client.app.state.secrets.csrf})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["added"]) == 2
    assert sorted(item["name"] for item in answer.json()["rejected"]) == ["readme.txt", "three.png"]
    again = client.post("/upload", files=[("files", ("batch.zip", buffer.getvalue(), "application/zip"))],
                        data={"csrf_token": client.app.state.secrets.csrf})
    assert again.json()["added"] == [] and again.json()["duplicates"] == 2


def test_folder_import_stays_inside_the_import_root(tmp_path):
    root, outside = tmp_path / "shared", tmp_path / "private"
    (root / "cats" / "deeper").mkdir(parents=True)
    outside.mkdir()
    (root / "cats" / "a.png").write_bytes(png_bytes(20))
    (root / "cats" / "deeper" / "b.png").write_bytes(png_bytes(21))
    (outside / "secret.png").write_bytes(png_bytes(22))
    (root / "cats" / "link.png").symlink_to(outside / "secret.png")
    client = make_client(tmp_path / "project", import_root=root)
    create_project(client, ("a", "b"))
    token = {"csrf_token": client.app.state.secrets.csrf}
    for folder in ("../private", str(outside), "cats/../../private", "missing"):
        answer = client.post("/import", data={**token, "folder": folder})
        assert answer.status_code == 400, folder
    answer = client.post("/import", data={**token, "folder": "cats"})
    assert answer.status_code == 200 and len(answer.json()["added"]) == 2
    assert answer.json()["rejected"] == [{"name": "link.png", "reason": "a link that leads outside the import root"}]
    closed = make_client(tmp_path / "other")
    create_project(closed, ("a", "b"))
    refused = closed.post("/import", data={"csrf_token": closed.app.state.secrets.csrf, "folder": "cats"})
    assert refused.status_code == 400 and "--import-root" in refused.json()["error"]


def test_bad_project_settings_are_one_sentence_and_leave_nothing(tmp_path):
    client = make_client(tmp_path / "project")
    token = {"csrf_token": client.app.state.secrets.csrf}
    for form, words in (({"name": "p", "classes": "only"}, "2 to 50 class names"),
                        ({"name": "p", "classes": "a\na"}, "every class name must be different"),
                        ({"name": "p", "classes": "a\n=cmd()"}, "not start with"),
                        ({"name": "p", "classes": "a\nb", "model": "resnt18"}, "resnet18"),
                        ({"name": "p", "classes": "a\nb", "strategy": "active_transfer_learning"}, "holdout"),
                        ({"name": "p", "classes": "a\nb", "size": "-3"}, "size must be a whole number")):
        answer = client.post("/setup", data={**token, **form})
        assert answer.status_code == 400 and words in answer.json()["error"], (form, answer.text)
        assert answer.json()["error"].count(". ") == 0
    assert not (tmp_path / "project" / "project.json").exists() and not (tmp_path / "project" / "run").exists()


def test_the_server_warns_when_bound_beyond_this_machine():
    from activelab.app.server import login_url
    from activelab.serving import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    assert login_url("::1", 8000, "t") == "http://[::1]:8000/login?token=t"
