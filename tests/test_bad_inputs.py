"""Bad input on the command line: exit code 2, one line on stderr naming the field, the value and what is allowed,
before any model is loaded; HYDRA_FULL_ERROR=1 gives the traceback instead. docs/bad_inputs.md lists many more."""

from __future__ import annotations

import json

import pytest

from conftest import TINY, cli

CASES = {  # override -> the start of the one line the user sees
    "method.r=0": "peftlab: error: method.r: got 0; allowed: an integer >= 1",
    "method.target_modules=[foo]": "peftlab: error: method.target_modules: got 'foo'; allowed: roles query, key",
    "method.use_rslora=maybe": "peftlab: error: method.use_rslora: got 'maybe'; allowed: true or false",
    "method.rank=4": "peftlab: error: method.rank: got '4'; allowed: a key of the composed config (add a new key with +method.rank=4)",
    "+method.rank=4": "peftlab: error: method.rank: got 4; allowed: fields of method 'lora'",
    "data.source=/nonexistent.csv": "peftlab: error: data.source: got '/nonexistent.csv'; allowed:",
    "+trainer.foo=1": "peftlab: error: trainer.foo: got 1; allowed: an argument of lightning.Trainer",
    "trainer.accelerator=gpu": "peftlab: error: trainer: got 'No supported gpu backend found!'",
}


@pytest.mark.parametrize("override", list(CASES))
def test_one_line_and_exit_2(tmp_path, override):
    out = cli("peftlab-train", *TINY, f"hydra.run.dir={tmp_path}", override)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(CASES[override]), out.stderr
    record = tmp_path / "metrics.json"
    if record.exists():  # errors found after Hydra started are recorded too, never as a success
        assert json.loads(record.read_text())["status"] == "failed"
    assert not (tmp_path / "checkpoints").exists()


def test_full_error_shows_the_traceback(tmp_path):
    out = cli("peftlab-train", *TINY, f"hydra.run.dir={tmp_path}", "method.r=0", env={"HYDRA_FULL_ERROR": "1"})
    assert out.returncode != 0
    assert "Traceback" in out.stderr and "ConfigError: method.r: got 0" in out.stderr


def test_adapter_tool_refuses_a_pickle_in_one_line(tmp_path):
    (tmp_path / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")
    out = cli("peftlab-adapter", "export", str(tmp_path / "adapter_model.bin"), str(tmp_path / "out"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"peftlab: error: adapter: got '{tmp_path / 'adapter_model.bin'}'; allowed: a .safetensors file "
        "(pickle formats such as .bin, .pt, .ckpt are never loaded)"]
