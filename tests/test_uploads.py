"""Files uploaded with a start: stored before the 202, handed to the job, removed afterwards."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import pytest

from tests.support import Server, running_server, wait_for
from threadsvc.uploads import Uploads

GROUP = "/ps/service/groups/dev"


@pytest.fixture(scope="module")
def uploads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    settings = {"jobs": ["tests.jobs_for_tests"], "max-upload-file": 10_000, "max-upload": 50_000}
    for server, _ in running_server(tmp_path_factory.mktemp("uploads"), **settings):
        yield server


def test_files_reach_the_job_and_are_removed_after(uploads: Server) -> None:
    one, two = b"first file\n", b"x" * 9000
    with uploads.client("contributor") as http:
        answer = http.post(
            f"{GROUP}/threads",
            data={"job": "checksum", "label": "two"},
            files=[("files", ("../../etc/one.xml", one, "application/xml")),
                   ("files", ("two.bin", two, "application/octet-stream"))],
        )
        assert answer.status_code == 202, answer.text
        thread_id = re.search(r'id="([0-9a-f]{32})"', answer.text).group(1)  # type: ignore[union-attr]
        wait_for(http, f"/ps/service/threads/{thread_id}", lambda r: r.status_code == 303)
        result = http.get(f"/ps/service/threads/{thread_id}", follow_redirects=True).text
    assert result.splitlines() == [
        f"../../etc/one.xml {len(one)} {hashlib.sha256(one).hexdigest()}",
        f"two.bin {len(two)} {hashlib.sha256(two).hexdigest()}",
    ]
    # stored under server-made names only, and gone once the thread ended
    assert not (uploads.directory / "data" / "uploads" / thread_id).exists()


def test_a_file_above_the_per_file_limit_is_413(uploads: Server) -> None:
    with uploads.client("contributor") as http:
        answer = http.post(f"{GROUP}/threads", data={"job": "checksum"},
                           files={"files": ("big.bin", b"y" * 10_001)})
    assert answer.status_code == 413 and 'id="0206"' in answer.text
    assert not any((uploads.directory / "data" / "uploads").glob("*"))


def test_a_request_above_max_upload_is_413(uploads: Server) -> None:
    with uploads.client("contributor") as http:
        files = [("files", (f"f{i}", b"z" * 9_000)) for i in range(7)]
        answer = http.post(f"{GROUP}/threads", data={"job": "checksum"}, files=files)
    assert answer.status_code == 413 and 'id="0206"' in answer.text


def test_text_for_a_file_and_a_file_for_text_are_400(uploads: Server) -> None:
    with uploads.client("contributor") as http:
        text = http.post(f"{GROUP}/threads", data={"job": "checksum", "files": "not a file"})
        assert text.status_code == 400 and "files" in text.text and "multipart" in text.text
        upload = http.post(f"{GROUP}/threads", data={"job": "checksum"},
                           files=[("files", ("a", b"a")), ("label", ("l.txt", b"l"))])
        assert upload.status_code == 400 and "'label'" in upload.text
        missing = http.post(f"{GROUP}/threads", data={"job": "checksum", "label": "x"})
        assert missing.status_code == 400 and "'files' is required" in missing.text


def test_only_saved_files_make_a_thread_hold_uploads() -> None:
    """The runner skips looking for an uploads directory unless the stored parameters name a
    saved file (a dict) or files (a list of them); text, numbers and empty lists do not."""
    saved = {"name": "a.xml", "file": "uploads/x/documents-0", "size": 3, "type": "text/xml"}
    assert Uploads.saved_in({"seconds": "1", "schema": saved})
    assert Uploads.saved_in({"documents": [saved, saved]})
    assert not Uploads.saved_in({"seconds": "1", "steps": 3, "names": ["a", "b"], "none": []})
    assert not Uploads.saved_in({})
