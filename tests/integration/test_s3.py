"""`fp --sync s3` on the real bench: moto in server mode on 127.0.0.1 as S3, the sync helper in a
container with host networking, the TLS engine (no ssh at all) and the ssh host. Requests are
counted at the server, from its access log.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from tests import testbed
from tests.integration.conftest import Project, RemoteBench, docker, images_of, run_fp, start_in_group

pytestmark = pytest.mark.engine  # needs the test bench (tests/run sets it up)

BUCKET = "fp-test-bucket"
SECRET = "fpSECRETnotinanyimage0123456789"  # moto takes any key: this one is grepped for
MOTO = Path(sys.executable).with_name("moto_server")
REQUEST_RE = re.compile(r'"(?:\x1b\[[0-9;]*m)*(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP')


@dataclass
class S3Server:
    """A moto server of this test's own: its log is the record of every request."""

    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(self.port)], stdout=out, stderr=out, start_new_session=True)
        deadline = time.monotonic() + 30
        while not testbed.port_answers(self.port):
            assert time.monotonic() < deadline, "moto did not start"
            time.sleep(0.1)
        self.client().create_bucket(Bucket=BUCKET)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="fpkey", aws_secret_access_key=SECRET)

    def mark(self) -> int:
        return len(self.log.read_bytes())

    def requests_since(self, mark: int) -> list[tuple[str, str]]:
        text = self.log.read_bytes()[mark:].decode(errors="replace")
        return REQUEST_RE.findall(text)

    def keys_under(self, under: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=under)
        return [item["Key"] for page in pages for item in page.get("Contents", ())]


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_home: Path) -> Iterator[S3Server]:
    if not MOTO.exists():
        pytest.fail("moto_server is not installed in the test venv; run the tests with tests/run")
    server = S3Server(testbed.free_port(), tmp_path / "moto.log")
    server.start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "fpkey")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(isolated_home / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(isolated_home / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    yield server
    server.stop()


def staged_project(project: Project, server: S3Server, bucket: str = BUCKET) -> None:
    project.write(
        "fireplug.toml",
        f'[project]\nname = "{project.name}"\n\n[sync]\nmode = "s3"\ns3 = "s3://{bucket}/stage"\nendpoint = "{server.endpoint}"\nregion = "us-east-1"\n',
    )
    project.write("run.py", "print('ok')\n")


def add_tls_host(remote: RemoteBench) -> str:
    remote.add_hosts(f'[hosts.tlss3]\nurl = "tcp://127.0.0.1:{testbed.TLS_PORT}"\ncert_path = "{testbed.CERTS}"\ndata_root = "{remote.data_root("tlss3")}"\n')
    return "tlss3"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 0, err
    assert "Traceback" not in err
    return err


def object_puts(requests: list[tuple[str, str]]) -> list[str]:
    return [path for method, path in requests if method == "PUT" and "/objects/" in path]


def test_round_trip_through_s3_to_a_host_without_ssh(project: Project, remote: RemoteBench, s3: S3Server) -> None:
    staged_project(project, s3)
    big = project.write("data/input/big.bin", os.urandom(70 << 20))  # above the multipart threshold
    small = project.write("data/input/small.bin", os.urandom(300_000))
    project.write("data/input/note.txt", "hello\n")
    (project.root / "data/empty").mkdir()
    os.symlink("note.txt", project.root / "data/input/link")
    host = add_tls_host(remote)
    script = "cat data/input/big.bin data/input/small.bin | sha256sum > data/output/sum.txt; mkdir -p data/output/deep; echo hi > data/output/deep/r.txt"
    err = ok(run_fp(project.root, "--host", host, "sh", "-c", f"mkdir -p data/output; {script}"))
    on_host = remote.data_on(host, project)
    assert sha256(on_host / "input/big.bin") == sha256(big)
    assert sha256(on_host / "input/small.bin") == sha256(small)
    assert os.readlink(on_host / "input/link") == "note.txt"
    assert (on_host / "empty").is_dir()
    expected = hashlib.sha256(big.read_bytes() + small.read_bytes()).hexdigest()
    assert (project.root / "data/output/sum.txt").read_text().split()[0] == expected
    assert (project.root / "data/output/deep/r.txt").read_text() == "hi\n"
    assert "from host 'tlss3'" in err
    objects = {key.rsplit("/", 1)[-1] for key in s3.keys_under(f"stage/{project.key}/objects/")}
    assert {sha256(big), sha256(small), sha256(project.root / "data/output/sum.txt")} <= objects
    assert set(s3.keys_under(f"stage/{project.key}/refs/")) == {f"stage/{project.key}/refs/client", f"stage/{project.key}/refs/{host}"}
    listed = run_fp(project.root, "s3", "ls")
    assert listed.returncode == 0 and "client" in listed.stdout.decode() and host in listed.stdout.decode()


def test_requests_counted_at_the_server(project: Project, remote: RemoteBench, s3: S3Server) -> None:
    staged_project(project, s3)
    for index in range(20):
        project.write(f"data/f{index:02}.txt", f"file {index}\n" * 10)
    first = s3.mark()
    ok(run_fp(project.root, "--host", "primary", "--sync-in-only"))
    assert len(object_puts(s3.requests_since(first))) == 20

    noop = s3.mark()
    ok(run_fp(project.root, "--host", "primary", "--sync-in-only"))
    assert s3.requests_since(noop) == []

    for index in range(20):
        os.utime(project.root / f"data/f{index:02}.txt")
    touched = s3.mark()
    err = ok(run_fp(project.root, "--host", "primary", "--sync-in-only"))
    assert s3.requests_since(touched) == [], err

    project.write("data/f03.txt", "edited\n")
    edit = s3.mark()
    ok(run_fp(project.root, "--host", "primary", "--sync-in-only"))
    requests = s3.requests_since(edit)
    puts = sorted(path.split("/")[4] for method, path in requests if method == "PUT")  # /bucket/stage/KEY/objects/...
    assert puts == ["manifests", "objects", "refs"], requests
    assert [method for method, path in requests if method != "PUT"] == ["GET"], requests  # the host fetches the one object
    assert (remote.data_on("primary", project) / "f03.txt").read_text() == "edited\n"

    target = project.root / "data/f04.txt"
    before = target.stat()
    target.write_text("FILE 4\n" * 10)  # same size
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    restored = s3.mark()
    ok(run_fp(project.root, "--host", "primary", "--sync-in-only"))
    assert len(object_puts(s3.requests_since(restored))) == 1
    assert (remote.data_on("primary", project) / "f04.txt").read_text() == "FILE 4\n" * 10


def test_conflicts_and_deletions_as_with_rsync(project: Project, remote: RemoteBench, s3: S3Server) -> None:
    staged_project(project, s3)
    project.write("data/keep.txt", "v1\n")
    project.write("data/gone.txt", "delete me\n")
    ok(run_fp(project.root, "--host", "primary", "sh", "-c", "echo host > data/r.txt"))
    assert (project.root / "data/r.txt").read_text() == "host\n"
    ok(run_fp(project.root, "--host", "primary", "--no-sync", "sh", "-c", "echo host-v2 > data/r.txt"))
    project.write("data/r.txt", "local-v2\n")
    (project.root / "data/gone.txt").unlink()
    err = ok(run_fp(project.root, "--host", "primary", "--sync-in-only"))
    assert "conflict: r.txt" in err
    copies = [path for path in (project.root / "data").iterdir() if path.name.startswith("r.fp-conflict-primary-")]
    assert len(copies) == 1 and copies[0].read_text() == "host-v2\n"
    assert (project.root / "data/r.txt").read_text() == "local-v2\n"
    assert (remote.data_on("primary", project) / "r.txt").read_text() == "local-v2\n"
    assert not (remote.data_on("primary", project) / "gone.txt").exists()
    trashed = list(remote.trash_on("primary", project).rglob("gone.txt"))
    assert len(trashed) == 1 and trashed[0].read_text() == "delete me\n"


def test_missing_bucket_fails_before_any_build(project: Project, remote: RemoteBench, s3: S3Server) -> None:
    staged_project(project, s3, bucket="fp-no-such-bucket")
    project.write("data/a.txt", "a\n")
    result = run_fp(project.root, "--host", "primary", "python3", "run.py")
    err = result.stderr.decode()
    assert result.returncode == 125, err
    lines = [line for line in err.splitlines() if line.startswith("fp: error:")]
    assert len(lines) == 1 and "NoSuchBucket" in lines[0], err
    assert "Traceback" not in err
    assert images_of(project.name) == []


def test_no_credentials_fail_before_any_build(project: Project, remote: RemoteBench, s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    staged_project(project, s3)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    result = run_fp(project.root, "--host", "primary", "python3", "run.py")
    err = result.stderr.decode()
    assert result.returncode == 125, err
    assert "no AWS credentials" in err and "Traceback" not in err
    assert images_of(project.name) == []


def test_credentials_are_in_no_image_label_or_log(project: Project, remote: RemoteBench, s3: S3Server, tmp_path: Path) -> None:
    staged_project(project, s3)
    project.write("data/a.txt", "a\n")
    err = ok(run_fp(project.root, "--host", "primary", "-v", "sh", "-c", "env > data/env.txt"))
    assert SECRET not in err
    assert SECRET not in (project.root / "data/env.txt").read_text()
    images = images_of(project.name) + [line for line in docker("images", "--format", "{{.Repository}}:{{.Tag}}").split() if line.startswith("fireplug-base:")]
    archive = tmp_path / "images.tar"
    docker("save", "-o", str(archive), *images)
    assert SECRET.encode() not in archive.read_bytes()
    left = docker("ps", "-aq", "--filter", f"label=io.fireplug.project={project.name}").split()
    assert left == []  # no helper outlives its sync (its job file is the only place the key was)
    for image in images:
        assert SECRET not in docker("image", "inspect", image)


def test_endpoint_killed_mid_transfer(project: Project, remote: RemoteBench, s3: S3Server) -> None:
    staged_project(project, s3)
    big = project.write("data/big.bin", os.urandom(300 << 20))
    ok(run_fp(project.root, "--host", "primary", "--no-sync", "true"))  # builds first: the kill lands in the upload
    process = start_in_group(project, "--host", "primary", "--sync-in-only")
    deadline = time.monotonic() + 120
    while not any("uploadId" in path for _, path in s3.requests_since(0)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no multipart upload started"
        time.sleep(0.05)
    s3.stop()
    _, err_bytes = process.communicate(timeout=180)
    err = err_bytes.decode(errors="replace")
    assert process.returncode == 125, err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("fp: error:")]) == 1, err
    assert not (remote.data_on("primary", project) / "big.bin").exists()
    assert sha256(big) == hashlib.sha256(big.read_bytes()).hexdigest()
    s3.start()  # an empty bucket again: fp forgot what it knew, and sends everything
    ok(run_fp(project.root, "--host", "primary", "--sync-in-only"))
    assert sha256(remote.data_on("primary", project) / "big.bin") == sha256(big)
    assert f"stage/{project.key}/refs/client" in s3.keys_under(f"stage/{project.key}/refs/")  # the manifest was written again too


def test_interrupted_push_leaves_no_partial_file(project: Project, remote: RemoteBench, s3: S3Server) -> None:
    staged_project(project, s3)
    big = project.write("data/big.bin", os.urandom(200 << 20))
    ok(run_fp(project.root, "--host", "primary", "--no-sync", "true"))
    process = start_in_group(project, "--host", "primary", "--sync-in-only")
    deadline = time.monotonic() + 120
    while not any(method == "GET" and "/objects/" in path for method, path in s3.requests_since(0)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the host never started downloading"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)
    _, err_bytes = process.communicate(timeout=120)
    err = err_bytes.decode(errors="replace")
    assert process.returncode == 130, err
    assert "Traceback" not in err
    landed = remote.data_on("primary", project) / "big.bin"
    assert not landed.exists() or sha256(landed) == sha256(big)
    ok(run_fp(project.root, "--host", "primary", "--sync-in-only"))
    assert sha256(landed) == sha256(big)
    assert docker("ps", "-aq", "--filter", f"label=io.fireplug.project={project.name}").split() == []


def test_gc_removes_only_what_no_ref_reaches(project: Project, remote: RemoteBench, s3: S3Server) -> None:
    staged_project(project, s3)
    project.write("data/a.txt", "version 1\n")
    project.write("data/b.txt", "stays\n")
    ok(run_fp(project.root, "--host", "primary", "--sync-in-only"))
    old = sha256(project.root / "data/a.txt")
    project.write("data/a.txt", "version 2, longer\n")
    ok(run_fp(project.root, "--host", "primary", "--sync-in-only"))
    objects = f"stage/{project.key}/objects/"
    assert len(s3.keys_under(objects)) == 3
    dry = run_fp(project.root, "s3", "gc", "--dry-run", "--min-age", "0")
    assert dry.returncode == 0 and "would remove 1 objects" in dry.stderr.decode(), dry.stderr
    assert len(s3.keys_under(objects)) == 3
    spared = run_fp(project.root, "s3", "gc")  # everything is younger than the default hour
    assert spared.returncode == 0 and "spared 1" in spared.stderr.decode(), spared.stderr
    ok(run_fp(project.root, "s3", "gc", "--min-age", "0"))
    left = {key.rsplit("/", 1)[-1] for key in s3.keys_under(objects)}
    assert left == {sha256(project.root / "data/a.txt"), sha256(project.root / "data/b.txt")} and old not in left
    assert len(s3.keys_under(f"stage/{project.key}/manifests/")) == 1
    project.write("data/c.txt", "after gc\n")  # what this machine knows of the bucket was updated
    ok(run_fp(project.root, "--host", "primary", "sh", "-c", "cat data/a.txt data/c.txt > data/out.txt"))
    assert (project.root / "data/out.txt").read_text() == "version 2, longer\nafter gc\n"


def test_a_bucket_emptied_behind_fps_back(project: Project, remote: RemoteBench, s3: S3Server) -> None:
    staged_project(project, s3)
    project.write("data/a.txt", "the same bytes\n")
    ok(run_fp(project.root, "--host", "primary", "--sync-in-only"))
    client = s3.client()
    for key in s3.keys_under():
        client.delete_object(Bucket=BUCKET, Key=key)
    project.write("data/b.txt", "the same bytes\n")  # an object fp believes the bucket holds
    err = ok(run_fp(project.root, "--host", "primary", "--sync-in-only"))
    assert "lacks objects fp thought it had" in err
    assert (remote.data_on("primary", project) / "b.txt").read_text() == "the same bytes\n", err
    assert set(s3.keys_under(f"stage/{project.key}/refs/")) == {f"stage/{project.key}/refs/client"}
    assert len(s3.keys_under(f"stage/{project.key}/objects/")) == 1


def test_a_hostile_container_cannot_make_an_s3_sync_write_outside(project: Project, remote: RemoteBench, s3: S3Server, tmp_path: Path) -> None:
    staged_project(project, s3)
    outside = tmp_path / "outside"
    outside.mkdir()
    project.write("data/keep.txt", "mine\n")
    host = add_tls_host(remote)
    script = f"ln -s {outside} data/evil && mkfifo data/fifo && rm data/keep.txt && mkdir data/keep.txt"
    script += " && echo x > data/keep.txt/inner && chmod 4755 data/keep.txt/inner"
    err = ok(run_fp(project.root, "--host", host, "sh", "-c", script))
    local = project.root / "data"
    assert (local / "evil").is_symlink() and os.readlink(local / "evil") == str(outside)
    assert list(outside.iterdir()) == []  # nothing was written through the link
    assert not (local / "fifo").exists()
    assert (local / "keep.txt").is_dir() and (local / "keep.txt/inner").read_text() == "x\n"
    assert not (local / "keep.txt/inner").stat().st_mode & 0o6000  # no setuid bit comes back
    trashed = list((remote.home / ".local/state/fireplug/trash").rglob("keep.txt"))
    assert [path.read_text() for path in trashed if path.is_file()] == ["mine\n"], err  # the replaced file is in the local trash
