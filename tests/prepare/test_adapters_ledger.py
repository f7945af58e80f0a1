"""Adapters (layouts, labels, clear errors) and the ledger (durability, resume state)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.prepare.conftest import make_cfg

from datamodules.prepare.adapters import LayoutError, list_items
from datamodules.prepare.config import PrepareConfig, resolve_slice
from datamodules.prepare.ledger import Ledger, LedgerState, read_records


def touch(root: Path, *rels: str) -> None:
    for r in rels:
        p = root / r
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_mead_labels_views_and_layout_error(tmp_path):
    touch(tmp_path, "M003/video/front/angry/level_3/001.mp4", "M003/video/left_30/angry/level_3/001.mp4",
          "M003/audio/angry/level_3/001.m4a", "W011/video/front/neutral/level_1/002.mp4")
    items = list_items(make_cfg(input=tmp_path, output=tmp_path / "o"))
    assert [(i.item_id, i.emotion, i.intensity, i.speaker_id) for i in items] == [
        ("M003_front_angry_l3_001", "angry", 3.0, "M003"), ("W011_front_neutral_l1_002", "neutral", 1.0, "W011")]
    assert items[0].audio.endswith("M003/audio/angry/level_3/001.m4a") and items[1].audio is None
    touch(tmp_path, "M003/video/front/angery/level_1/003.mp4")
    with pytest.raises(LayoutError, match=r"angery/level_1/003.mp4: emotion folder must be one of"):
        list_items(make_cfg(input=tmp_path, output=tmp_path / "o"))
    touch(tmp_path / "bad", "M003/front/angry/001.mp4")
    with pytest.raises(LayoutError, match=r"M003/front/angry/001.mp4: path does not match; MEAD layout is"):
        list_items(make_cfg(input=tmp_path / "bad", output=tmp_path / "o"))


def test_mafw_label_mapping_missing_and_unmapped(tmp_path):
    touch(tmp_path, "clips/00001.mp4", "clips/00002.mp4", "clips/00003.mp4", "clips/00004.mp4")
    (tmp_path / "labels.txt").write_text("name,label\n00001.mp4,happiness\n00002 anxiety\n00004\tsurprise\n")
    items = {i.item_id: i for i in list_items(make_cfg(dataset="mafw", input=tmp_path, output=tmp_path / "o"))}
    assert items["00001"].emotion == "happy" and items["00004"].emotion == "surprised"
    assert items["00002"].problem.startswith("unmapped_label") and items["00003"].problem.startswith("missing_label")
    with pytest.raises(LayoutError, match="label file .*nope.txt not found"):
        list_items(make_cfg(dataset="mafw", input=tmp_path, output=tmp_path / "o", labels=str(tmp_path / "nope.txt")))


def test_folder_csv_avspeech_hdtf(tmp_path):
    touch(tmp_path / "f", "spk1/a.mp4", "spk2/b.mp4")
    (tmp_path / "f.csv").write_text("path,emotion,intensity,speaker\nspk1/a.mp4,sad,2,alice\n")
    cfg = make_cfg(dataset="folder", input=tmp_path / "f", output=tmp_path / "o", labels=str(tmp_path / "f.csv"))
    items = list_items(cfg)
    assert (items[0].emotion, items[0].intensity, items[0].speaker_id) == ("sad", 2.0, "alice")
    assert items[1].problem.startswith("missing_label")
    touch(tmp_path / "av", "abc.mp4")
    (tmp_path / "av" / "avspeech_train.csv").write_text("abc,1.5,6.0,0.4,0.3\nzzz,0.0,4.0,0.5,0.5\n")
    av = list_items(make_cfg(dataset="avspeech", input=tmp_path / "av", output=tmp_path / "o"))
    assert (av[0].start_s, av[0].end_s, av[0].face_centre, av[0].problem) == (1.5, 6.0, (0.4, 0.3), None)
    assert av[1].problem.startswith("missing_video")
    (tmp_path / "av" / "avspeech_train.csv").write_text("abc,1.5,notanumber,0.4,0.3\n")
    with pytest.raises(LayoutError, match=r"avspeech_train.csv:1: expected 'youtube_id,start,end,x,y'"):
        list_items(make_cfg(dataset="avspeech", input=tmp_path / "av", output=tmp_path / "o"))
    touch(tmp_path / "h", "WDA_BarackObama_000.mp4", "RD_Radio1_001.mp4")
    hdtf = list_items(make_cfg(dataset="hdtf", input=tmp_path / "h", output=tmp_path / "o"))
    assert [i.speaker_id for i in hdtf] == ["RD_Radio1", "WDA_BarackObama"]
    with pytest.raises(LayoutError, match="is not a directory; expected layout"):
        list_items(make_cfg(dataset="celebvtext", input=tmp_path / "missing", output=tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError, match="empty: no videos"):
        list_items(make_cfg(dataset="celebvtext", input=tmp_path / "empty", output=tmp_path))


def test_yaml_and_slice_resolution():
    from configs.loader import ConfigError, load_config

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(PrepareConfig, root / "configs" / "prepare.yaml", ["dataset=mead", "input=i", "output=o"])
    assert cfg.clips.min_s == 3.0 and cfg.crop_scale == 2.2 and not cfg.filters.sync
    with pytest.raises(ConfigError, match="did you mean 'filters.max_abs_yaw_deg'"):
        load_config(PrepareConfig, root / "configs" / "prepare.yaml", ["dataset=mead", "input=i", "output=o",
                                                                         "filters.max_yaw=3"])
    env = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert resolve_slice(cfg, env) == (2, 4) and resolve_slice(cfg, {}) == (0, 1)
    cfg.slice, cfg.num_slices = 1, 3
    assert resolve_slice(cfg, env) == (1, 3)


def test_ledger_torn_tail_and_resume_state(tmp_path):
    path = tmp_path / "ledger.jsonl"
    led = Ledger(path)
    led.append({"type": "run", "part": 0, "num_slices": 1})
    led.append({"type": "clip", "status": "done", "clip": "a_f0", "item": "a", "shard": "p0-0.tar"})
    led.append({"type": "shard", "name": "p0-0.tar", "count": 1, "sha256": "x", "clips": ["a_f0"], "keys": ["k"],
                "accumulators": {}})
    led.append({"type": "clip", "status": "done", "clip": "a_f100", "item": "a", "shard": "p0-1.tar"})
    led.append({"type": "item", "item": "a", "status": "done", "written": ["a_f0", "a_f100"], "rejected": []})
    led.append({"type": "item", "item": "b", "status": "rejected", "reason": "no_audio", "written": [], "rejected": []})
    led.append({"type": "item", "item": "c", "status": "failed", "error": "boom", "written": [], "rejected": []})
    led.close()
    with open(path, "a") as f:
        f.write('{"type": "item", "item": "d", "sta')  # killed mid-write
    assert len(read_records(path)) == 7
    st = LedgerState.load(path)
    assert st.done_clips == {"a_f0": "p0-0.tar"} and st.next_part == 1
    assert not st.item_finished("a")  # a_f100 sat in a shard that was never closed
    assert st.item_finished("b") and not st.item_finished("c") and st.item_finished("c", retry_failed=False)
    Ledger(path).close()  # reopening cuts the torn tail so the next record starts on its own line
    assert path.read_text().endswith("}\n") and json.loads(path.read_text().splitlines()[-1])["item"] == "c"


def test_slice_lock_refuses_a_second_writer(tmp_path):
    from datamodules.prepare.slices import lock_slice

    lock = lock_slice(tmp_path)
    with pytest.raises(ValueError, match="another prepare process is writing this slice"):
        lock_slice(tmp_path)
    lock.close()
    lock_slice(tmp_path).close()
