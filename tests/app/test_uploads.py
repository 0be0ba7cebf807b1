"""Issue 14: a rerun of the Characterize page does not hash and copy the same upload again.

The copy (``app.uploads.save_upload``) and the validation that hashes it
(``carlos.characterize.jobs.inspect_upload``) are wrapped to count their calls: once per new
file, none for reruns, none again when the job is enqueued from the kept copy (``submit``
validates the file itself before storing it)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from streamlit.testing.v1 import AppTest

from carlos.config import REPO_ROOT
from carlos.files.testing import make_test_lora
from carlos.store.store import Store


def test_the_upload_is_copied_and_hashed_once_per_file(store_copy: Store, monkeypatch, tmp_path: Path) -> None:
    import app.uploads
    from carlos.characterize import jobs

    calls: Counter[str] = Counter()

    def counting(name: str, fn):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(app.uploads, "save_upload", counting("copy", app.uploads.save_upload))
    monkeypatch.setattr(jobs, "inspect_upload", counting("hash", jobs.inspect_upload))
    monkeypatch.setattr("app.worker.ensure_background_worker", lambda: None)  # only the queue matters here
    monkeypatch.setenv("CARLOS_DB", str(store_copy.path))
    monkeypatch.setenv("CARLOS_REVIEWER", "ada")
    monkeypatch.delenv("CARLOS_REVIEWERS", raising=False)
    first = make_test_lora(tmp_path / "a.safetensors", seed=1).read_bytes()
    second = make_test_lora(tmp_path / "b.safetensors", seed=2).read_bytes()

    at = AppTest.from_file(str(REPO_ROOT / "pages" / "characterize.py"), default_timeout=60).run()
    at.file_uploader[0].upload("a.safetensors", first).run()
    assert not at.exception and any(s.value == "Validation report" for s in at.subheader)
    assert calls == {"copy": 1, "hash": 1}
    kept = at.session_state["_char_upload"]
    assert kept.path.read_bytes() == first and kept.sha256 == kept.report.sha256
    at.text_input[0].input("pixel art").run()  # reruns: a widget changes, then a plain rerun
    at.run()
    assert calls == {"copy": 1, "hash": 1}
    at.button(key="char_enqueue").click().run()
    assert not at.error and store_copy.jobs.get(at.session_state["char_job"])["status"] == "queued"
    assert calls == {"copy": 1, "hash": 1}

    at.file_uploader[0].clear().upload("b.safetensors", second).run()
    assert calls == {"copy": 2, "hash": 2}
    assert not kept.path.exists()  # the first copy is removed with its file
    at.run()
    assert calls == {"copy": 2, "hash": 2}
    at.file_uploader[0].clear().run()
    assert "_char_upload" not in at.session_state
