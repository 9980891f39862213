"""One contract, two backends: every test here runs on a folder and on S3 (moto's server)."""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from conftest import read_repository_file
from envpipe_agent.errors import UnsafePath, UsageError
from envpipe_agent.repository import AlreadyExists, KeyNotFound, open_repository
from envpipe_agent.repository.base import download, stream_sha256


@pytest.fixture
def repo(repository_url):
    return open_repository(repository_url, dict(os.environ))


def test_write_then_read_returns_the_bytes_and_the_listed_tag(repo, repository_url):
    tag = repo.write("1.0.1/main.tf", b"resource {}\n")
    assert repo.read("1.0.1/main.tf") == b"resource {}\n"
    assert read_repository_file(repository_url, "1.0.1/main.tf") == b"resource {}\n"
    [info] = list(repo.list("1.0.1/"))
    assert (info.key, info.size, info.etag) == ("1.0.1/main.tf", 12, tag)
    assert tag == hashlib.md5(b"resource {}\n").hexdigest()


def test_https_url_is_the_objects_url_on_s3_and_none_for_a_folder(repo, repository_url):
    # What CloudFormation's TemplateURL takes; a folder has none (the runner says so).
    url = repo.https_url(".envpipe/templates/test/a b.yaml")
    if repository_url.startswith("s3://"):
        bucket, _, prefix = repository_url[len("s3://"):].partition("/")
        region = os.environ["AWS_DEFAULT_REGION"]
        assert url == f"https://{bucket}.s3.{region}.amazonaws.com/{prefix}/.envpipe/templates/test/a%20b.yaml"
    else:
        assert url is None


def test_folders_are_listed_by_a_partial_name_without_their_contents(repo):
    for key in ("r/test/2026-11-28/a.json", "r/test/2026-11-29/b.json", "r/test/2026-11-29/c/d.json",
                "r/test/20261127T000000Z-x.json", "r/test/2025-12-31/e.json", "r/other/2026-01-01/f.json"):
        repo.write(key, b"{}")
    assert list(repo.list_folders("r/test/2026-")) == ["r/test/2026-11-28/", "r/test/2026-11-29/"]
    assert list(repo.list_folders("r/test/")) == ["r/test/2025-12-31/", "r/test/2026-11-28/", "r/test/2026-11-29/"]
    assert list(repo.list_folders("r/none/")) == []
    assert [i.key for i in repo.list("r/test/2026-", start_after="r/test/2026-11-28/a.json")] == [
        "r/test/2026-11-29/b.json", "r/test/2026-11-29/c/d.json"]


def test_missing_key_raises_key_not_found(repo):
    with pytest.raises(KeyNotFound):
        repo.read("1.0.1/nothing")
    with pytest.raises(KeyNotFound):
        repo.open("1.0.1/nothing")


def test_conditional_write_refuses_an_existing_key_and_keeps_it(repo):
    repo.write(".envpipe/locks/staging.json", b"first", if_absent=True)
    with pytest.raises(AlreadyExists):
        repo.write(".envpipe/locks/staging.json", b"second", if_absent=True)
    assert repo.read(".envpipe/locks/staging.json") == b"first"


def test_only_one_of_many_concurrent_conditional_writers_wins(repo):
    winners, barrier = [], threading.Barrier(8)

    def contend(n: int) -> None:
        barrier.wait()
        try:
            repo.write(".envpipe/locks/test.json", str(n).encode(), if_absent=True)
            winners.append(n)
        except AlreadyExists:
            pass

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert repo.read(".envpipe/locks/test.json") == str(winners[0]).encode()


def test_plain_write_replaces(repo):
    repo.write("staging/a.tf", b"one")
    repo.write("staging/a.tf", b"two")
    assert repo.read("staging/a.tf") == b"two"


def test_list_is_in_key_order_within_the_prefix_and_after_start_after(repo):
    for key in ("b/2", "b/1", "b/sub/3", "bb/4", "a/0"):
        repo.write(key, key.encode())
    assert [i.key for i in repo.list("b/")] == ["b/1", "b/2", "b/sub/3"]
    assert [i.key for i in repo.list("b/", start_after="b/1")] == ["b/2", "b/sub/3"]
    assert [i.key for i in repo.list("missing/")] == []


def test_upload_streams_a_file_and_returns_its_listed_tag(repo, tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(300_000))
    tag = repo.upload("1.0.1/blob", path, path.stat().st_size)
    [info] = list(repo.list("1.0.1/"))
    assert info.etag == tag and info.size == 300_000
    assert stream_sha256(repo, "1.0.1/blob") == (300_000, hashlib.sha256(path.read_bytes()).hexdigest())


def test_copy_duplicates_bytes_and_returns_the_new_objects_tag(repo):
    repo.write("1.0.1/main.tf", b"content")
    tag = repo.copy("1.0.1/main.tf", "staging/main.tf", 7)
    assert repo.read("staging/main.tf") == b"content"
    assert {i.key: i.etag for i in repo.list("staging/")} == {"staging/main.tf": tag}


def test_copy_of_a_missing_source_raises_key_not_found(repo):
    with pytest.raises(KeyNotFound):
        repo.copy("1.0.1/gone.tf", "staging/gone.tf", 1)


def test_delete_removes_keys_and_ignores_missing_ones(repo):
    repo.write("staging/a", b"a")
    repo.write("staging/deep/b", b"b")
    repo.write("staging/c", b"c")
    repo.delete(["staging/a", "staging/deep/b", "staging/never-there"])
    assert [i.key for i in repo.list("staging/")] == ["staging/c"]


def test_download_writes_the_bytes_and_returns_their_hash(repo, tmp_path):
    repo.write("1.0.1/x", b"xyz")
    assert download(repo, "1.0.1/x", tmp_path / "x") == (3, hashlib.sha256(b"xyz").hexdigest())
    assert (tmp_path / "x").read_bytes() == b"xyz"


@pytest.mark.parametrize("key", ["../evil", "staging/../evil", "/abs", "a\\b", "a\x00b", "a//b", "./a", ""])
def test_keys_that_would_escape_are_refused_on_every_operation(repo, key):
    with pytest.raises(UnsafePath):
        repo.write(key, b"x")
    with pytest.raises(UnsafePath):
        repo.read(key)
    with pytest.raises(UnsafePath):
        repo.delete([key])
    with pytest.raises(UnsafePath):
        repo.copy(key, "staging/x", 1)


def test_location_names_the_repository(repo, repository_url):
    assert repo.location("1.0.1").endswith("1.0.1")
    assert repo.location("1.0.1").startswith(repository_url)


# --- backend specifics -----------------------------------------------------------


def test_unknown_scheme_is_a_usage_error():
    with pytest.raises(UsageError, match="unsupported scheme 'ftp'"):
        open_repository("ftp://host/repo", {})


def test_local_delete_prunes_emptied_folders_but_never_the_root(tmp_path):
    repo = open_repository(str(tmp_path / "repo"), {})
    repo.write("staging/modules/net/main.tf", b"x")
    repo.write("staging/keep.tf", b"y")
    repo.delete(["staging/modules/net/main.tf"])
    assert not (tmp_path / "repo" / "staging" / "modules").exists()
    repo.delete(["staging/keep.tf"])
    assert not (tmp_path / "repo" / "staging").exists()
    assert (tmp_path / "repo").is_dir()


def test_local_writes_survive_a_concurrent_delete_pruning_their_folder(tmp_path):
    """One agent's delete empties a folder while another writes into it."""
    repo = open_repository(str(tmp_path / "repo"), {})
    failures = []

    def writer() -> None:
        for n in range(300):
            try:
                repo.write(f"staging/deep/w{n}.json", b"x")
                repo.delete([f"staging/deep/w{n}.json"])
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                failures.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_local_delete_keeps_envpipes_own_folders(tmp_path):
    repo = open_repository(str(tmp_path / "repo"), {})
    repo.write(".envpipe/locks/staging.json", b"{}")
    repo.delete([".envpipe/locks/staging.json"])
    assert (tmp_path / "repo" / ".envpipe" / "locks").is_dir()


def test_local_listing_skips_half_written_temporary_files(tmp_path):
    repo = open_repository(str(tmp_path / "repo"), {})
    repo.write("1.0.1/a", b"a")
    (tmp_path / "repo" / "1.0.1" / ".envpipe-tmp-123-b").write_bytes(b"partial")
    assert [i.key for i in repo.list("1.0.1/")] == ["1.0.1/a"]


def test_file_url_opens_a_folder(tmp_path):
    repo = open_repository(f"file://{tmp_path}/repo", {})
    repo.write("x", b"1")
    assert (tmp_path / "repo" / "x").read_bytes() == b"1"


def test_s3_large_upload_is_multipart_and_round_trips(s3_bucket, tmp_path):
    from envpipe_agent.repository.s3 import MULTIPART_THRESHOLD

    repo = open_repository(f"s3://{s3_bucket}/p", dict(os.environ))
    path = tmp_path / "big"
    with open(path, "wb") as out:
        out.write(os.urandom(MULTIPART_THRESHOLD + 1024))
    tag = repo.upload("1.0.1/big", path, path.stat().st_size)
    assert tag.endswith("-2")
    assert stream_sha256(repo, "1.0.1/big")[1] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_s3_endpoint_comes_from_aws_endpoint_url_s3(moto_server, s3, monkeypatch):
    s3.create_bucket(Bucket="endpoint-check")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    environ = dict(os.environ, AWS_ENDPOINT_URL_S3=moto_server)
    repo = open_repository("s3://endpoint-check", environ)
    repo.write("k", b"v")
    assert s3.get_object(Bucket="endpoint-check", Key="k")["Body"].read() == b"v"


def test_s3_missing_bucket_is_a_clear_usage_error(s3):
    repo = open_repository("s3://no-such-bucket-here/p", dict(os.environ))
    with pytest.raises(UsageError, match="bucket 'no-such-bucket-here' does not exist"):
        list(repo.list("1.0.1/"))


def test_s3_uses_standard_retries(s3_bucket):
    repo = open_repository(f"s3://{s3_bucket}", dict(os.environ))
    assert repo.client.meta.config.retries["mode"] == "standard"
