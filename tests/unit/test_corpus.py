"""scripts/make_corpus.py: ARCTIC layout, byte-identical rebuilds, manifest cache."""

from __future__ import annotations

import io
import shutil
import wave
import zipfile
from pathlib import Path

import pytest

from tasks.audio_fetch import parse_prompts
from tests.helpers import load_script

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


mc = load_script("make_corpus")


def test_layout_and_format(tmp_path: Path) -> None:
    [z] = mc.build_corpus(tmp_path, ["awb"], 3, seed=1)
    assert z.name == "cmu_us_awb_arctic-0.90-release.zip"
    with zipfile.ZipFile(z) as zf:
        names = zf.namelist()
        assert names == sorted(names)
        assert "cmu_us_awb_arctic/wav/arctic_a0003.wav" in names
        prompts = parse_prompts(zf.read("cmu_us_awb_arctic/etc/txt.done.data").decode())
        assert list(prompts) == ["arctic_a0001", "arctic_a0002", "arctic_a0003"]
        with wave.open(io.BytesIO(zf.read("cmu_us_awb_arctic/wav/arctic_a0001.wav"))) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
            assert w.getnframes() > 8000
        assert {i.date_time for i in zf.infolist()} == {mc.ZIP_TIME}


def test_rebuild_is_byte_identical_and_cached(tmp_path: Path) -> None:
    a = mc.build_corpus(tmp_path / "a", ["bdl", "slt"], 2, seed=3)
    b = mc.build_corpus(tmp_path / "b", ["bdl", "slt"], 2, seed=3)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    before = a[0].stat().st_mtime_ns
    assert mc.build_corpus(tmp_path / "a", ["bdl"], 2, seed=3) == [a[0]]
    assert a[0].stat().st_mtime_ns == before  # manifest matched: not rebuilt
    c = mc.build_corpus(tmp_path / "a", ["bdl"], 2, seed=4)  # other params: rebuilt
    assert c[0].read_bytes() != b[0].read_bytes()


def test_speakers_differ_but_share_prompts(tmp_path: Path) -> None:
    zs = mc.build_corpus(tmp_path, ["awb", "clb"], 1, seed=0)
    wavs = []
    for z, spk in zip(zs, ["awb", "clb"], strict=True):
        with zipfile.ZipFile(z) as zf:
            wavs.append(zf.read(f"cmu_us_{spk}_arctic/wav/arctic_a0001.wav"))
    assert wavs[0] != wavs[1]
    assert mc.prompts(5, 0) == mc.prompts(5, 0) != mc.prompts(5, 1)


def test_prompt_ids_follow_arctic() -> None:
    ids = [u for u, _ in mc.prompts(600, 0)]
    assert ids[0] == "arctic_a0001" and ids[592] == "arctic_a0593" and ids[593] == "arctic_b0001"


def test_unknown_speaker(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown speaker"):
        mc.build_corpus(tmp_path, ["zzz"], 1)
