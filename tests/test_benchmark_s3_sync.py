"""The S3 benchmark's own machinery: the counting moto server, and one tiny end-to-end run."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, Tuple

import boto3
import pytest
import requests
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import moto_delay  # noqa: E402


@pytest.fixture
def counting_server() -> Iterator[Tuple[str, moto_delay.CountingDelayApp]]:
    app = moto_delay.CountingDelayApp(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}", app
    server.shutdown()
    thread.join()


def test_benchmark_server_counts_each_s3_request_by_kind(counting_server) -> None:
    url, app = counting_server
    client = boto3.client("s3", region_name="us-east-1", endpoint_url=url)
    client.create_bucket(Bucket="counted")
    client.put_object(Bucket="counted", Key="a/one.tf", Body=b"one")
    client.copy_object(Bucket="counted", Key="b/one.tf", CopySource={"Bucket": "counted", "Key": "a/one.tf"})
    client.list_objects_v2(Bucket="counted", Prefix="b/")
    client.get_object(Bucket="counted", Key="b/one.tf")["Body"].read()
    client.head_object(Bucket="counted", Key="b/one.tf")
    client.delete_objects(Bucket="counted", Delete={"Objects": [{"Key": "a/one.tf"}]})
    client.delete_object(Bucket="counted", Key="b/one.tf")

    counts = requests.post(f"{url}/_bench/counts", timeout=10).json()

    assert counts == {"total": 8, "by_kind": {"COPY": 1, "CREATE_BUCKET": 1, "DELETE": 1, "DELETE_BATCH": 1,
                                              "GET": 1, "HEAD": 1, "LIST": 1, "PUT": 1}}
    # POST returned the counts and reset them; control requests are never counted.
    assert requests.get(f"{url}/_bench/counts", timeout=10).json() == {"total": 0, "by_kind": {}}


def test_benchmark_server_sets_its_delay_through_the_control_path(counting_server) -> None:
    url, app = counting_server
    assert requests.post(f"{url}/_bench/delay?ms=30", timeout=10).json() == {"delay_ms": 30.0}
    assert app.delay == pytest.approx(0.030)
    assert requests.get(f"{url}/_bench/nothing", timeout=10).status_code == 404


def test_multipart_requests_are_told_apart(counting_server) -> None:
    url, app = counting_server
    client = boto3.client("s3", region_name="us-east-1", endpoint_url=url)
    client.create_bucket(Bucket="parts")
    upload = client.create_multipart_upload(Bucket="parts", Key="big.bin")["UploadId"]
    etag = client.upload_part(Bucket="parts", Key="big.bin", UploadId=upload, PartNumber=1,
                              Body=b"x" * 10)["ETag"]
    client.complete_multipart_upload(Bucket="parts", Key="big.bin", UploadId=upload,
                                     MultipartUpload={"Parts": [{"ETag": etag, "PartNumber": 1}]})

    assert app.counts()["by_kind"] == {"COMPLETE_MULTIPART": 1, "CREATE_BUCKET": 1, "CREATE_MULTIPART": 1,
                                       "UPLOAD_PART": 1}


@pytest.mark.skipif(not (Path(sys.executable).parent / "aws").exists(),
                    reason="awscli is not installed next to this Python ('make bench' installs it)")
def test_s3_sync_benchmark_copies_only_changed_files_where_awscli_copies_all(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "s3_sync.py"), "--files", "40", "--folders", "4", "--rounds", "1",
         "--delays", "0", "--big-file-mib", "0", "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [raw] = tmp_path.glob("s3_sync-*.json")
    report = json.loads(raw.read_text())
    summary = report["delays"]["0ms"]["summary"]

    assert set(summary) == {"publish", "promote_full", "promote_1pct", "promote_noop"}
    assert report["changed_files"] == 1
    assert summary["publish"]["envpipe"]["by_kind"]["PUT"] == 40 + 2  # the claim, the files and the manifest
    assert summary["promote_full"]["envpipe"]["by_kind"]["COPY"] == 40
    # envpipe compares content tags; awscli's sync compares times, and the newer
    # version is newer everywhere.
    assert summary["promote_1pct"]["envpipe"]["by_kind"]["COPY"] == 1
    assert summary["promote_1pct"]["awscli"]["by_kind"]["COPY"] == 40
    assert "COPY" not in summary["promote_noop"]["envpipe"]["by_kind"]
    assert "COPY" not in summary["promote_noop"]["awscli"]["by_kind"]
