import json

import pytest
import torch
from torch.utils.data import DataLoader

from t2s.data import DatasetError, ManifestDataset, collate


@pytest.fixture
def clips(tmp_path, make_clip):
    """clips/a (frame folder), clips/b.mp4, clips/bad.mp4 (not a video), under tmp_path."""
    make_clip("clips/a")
    make_clip("clips/b.mp4")
    (tmp_path / "clips" / "bad.mp4").write_bytes(b"\x00" * 64)
    return tmp_path


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def test_csv_manifest(clips):
    manifest = clips / "manifest.csv"
    manifest.write_text('video,text\nclips/a,hello world\nclips/b.mp4,"rain, then sun"\n')
    ds = ManifestDataset(manifest, num_frames=8, image_size=16)
    assert len(ds) == 2
    item = ds[1]
    assert item["video"].shape == (3, 8, 16, 16) and item["video"].dtype == torch.float32
    assert -1 <= item["video"].min() and item["video"].max() <= 1
    assert [ds[0]["text"], item["text"]] == ["hello world", "rain, then sun"]


def test_path_column_tsv_and_root(clips, tmp_path):
    elsewhere = tmp_path / "lists"
    elsewhere.mkdir()
    manifest = elsewhere / "train.tsv"
    manifest.write_text("text\tpath\nhello\tclips/a\n")
    ds = ManifestDataset(manifest, num_frames=2, image_size=8, root=clips)
    assert ds[-1]["text"] == "hello" and ds[0]["video"].shape == (3, 2, 8, 8)


def test_jsonl_manifest_skips_blank_lines_and_ignores_extra_keys(clips):
    manifest = write_jsonl(
        clips / "m.jsonl",
        [{"video": "clips/a", "text": "one", "glosses": ["ONE"]}, "", {"path": "clips/b.mp4", "text": "two"}],
    )
    ds = ManifestDataset(manifest, num_frames=4, image_size=16)
    assert [s.line for s in ds.samples] == [1, 3]
    assert [ds[i]["text"] for i in range(len(ds))] == ["one", "two"]


def test_missing_manifest(tmp_path):
    with pytest.raises(DatasetError, match="manifest not found: .*nope.csv"):
        ManifestDataset(tmp_path / "nope.csv")


def test_manifest_folder_instead_of_file(tmp_path):
    (tmp_path / "manifest.jsonl").write_text("")
    with pytest.raises(DatasetError, match="is a folder.*manifest.jsonl"):
        ManifestDataset(tmp_path)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.csv", "", "empty.csv: the file is empty"),
        ("header_only.csv", "video,text\n", "header_only.csv: the manifest has no rows"),
        ("blank.jsonl", "\n\n", "blank.jsonl: the manifest has no rows"),
    ],
)
def test_empty_manifest(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DatasetError, match=message):
        ManifestDataset(tmp_path / name)


def test_unknown_manifest_format(tmp_path):
    (tmp_path / "list.txt").write_text("a.mp4 hello\n")
    with pytest.raises(DatasetError, match="list.txt: unknown manifest format"):
        ManifestDataset(tmp_path / "list.txt")


def test_missing_column_lists_found_and_expected(clips):
    manifest = clips / "manifest.csv"
    manifest.write_text("file,caption\nclips/a,hello\n")
    with pytest.raises(DatasetError) as info:
        ManifestDataset(manifest)
    message = str(info.value)
    assert "manifest.csv" in message and "missing column 'video'" in message
    assert "the header has file, caption" in message and "expected video (or path), text" in message


def test_jsonl_row_without_text(clips):
    manifest = write_jsonl(clips / "m.jsonl", [{"video": "clips/a", "text": "ok"}, "", {"video": "clips/a"}])
    with pytest.raises(DatasetError, match=r"m.jsonl, line 3: missing key 'text'; the row has keys video"):
        ManifestDataset(manifest)


@pytest.mark.parametrize(
    "row, message",
    [
        ('{"video": "clips/a", "text": "ok"', r"line 2: not valid JSON"),
        ('["clips/a", "ok"]', r"line 2: expected a JSON object, got list"),
        ('{"video": "clips/a", "text": 3}', r"line 2: 'text' must be a string, got int"),
        ('{"video": "clips/a", "text": "  "}', r"line 2: the text is empty"),
    ],
)
def test_malformed_jsonl_row(clips, row, message):
    manifest = write_jsonl(clips / "m.jsonl", [{"video": "clips/a", "text": "ok"}, row])
    with pytest.raises(DatasetError, match="m.jsonl, " + message):
        ManifestDataset(manifest, skip_bad=True)  # manifest mistakes are never skipped


def test_csv_row_with_unquoted_delimiter(clips):
    manifest = clips / "manifest.csv"
    manifest.write_text("video,text\nclips/a,hello\nclips/a,rain, then sun\n")
    with pytest.raises(DatasetError, match="manifest.csv, line 3: the row has 3 fields.*quote values"):
        ManifestDataset(manifest)


def test_csv_line_numbers_count_multiline_fields(clips):
    manifest = clips / "manifest.csv"
    manifest.write_text('video,text\nclips/a,"two\nlines"\n\nclips/missing.mp4,x\n')
    with pytest.raises(DatasetError, match="line 5: video not found"):
        ManifestDataset(manifest)


def test_missing_video_names_manifest_and_line(clips):
    manifest = clips / "manifest.csv"
    manifest.write_text("video,text\nclips/a,fine\nclips/gone.mp4,lost\nclips/also_gone,lost\n")
    with pytest.raises(DatasetError) as info:
        ManifestDataset(manifest)
    message = str(info.value)
    assert "manifest.csv: 2 of 3 rows have no usable video" in message
    assert "line 3: video not found: clips/gone.mp4" in message and "line 4:" in message
    assert "skip_bad=True" in message


def test_undecodable_video_names_manifest_and_line(clips):
    manifest = clips / "manifest.csv"
    manifest.write_text("video,text\nclips/a,fine\nclips/bad.mp4,broken\n")
    ds = ManifestDataset(manifest, num_frames=4, image_size=16)
    assert ds[0]["text"] == "fine"
    with pytest.raises(DatasetError, match=r"manifest.csv, line 3: cannot read video .*bad.mp4.*skip_bad=True"):
        ds[1]


def test_skip_bad_counts_missing_and_undecodable_rows(clips):
    manifest = write_jsonl(
        clips / "m.jsonl",
        [
            {"video": "clips/a", "text": "first"},
            {"video": "clips/gone.mp4", "text": "missing"},
            {"video": "clips/bad.mp4", "text": "undecodable"},
            {"video": "clips/b.mp4", "text": "last"},
        ],
    )
    ds = ManifestDataset(manifest, num_frames=4, image_size=16, skip_bad=True)
    assert len(ds) == 3  # the missing video is left out up front
    assert [(s.line, s.video) for s in ds.skipped] == [(2, "clips/gone.mp4")]
    # The undecodable row is found when loaded; the next readable sample takes its place.
    assert [ds[i]["text"] for i in range(len(ds))] == ["first", "last", "last"]
    assert [s.line for s in ds.skipped] == [2, 3]
    assert "FFmpeg" in ds.skipped[1].reason and str(ds.skipped[1]).startswith("line 3:")
    ds[1]
    assert len(ds.skipped) == 2  # counted once


def test_skip_bad_with_nothing_left(clips):
    manifest = write_jsonl(clips / "m.jsonl", [{"video": "x.mp4", "text": "a"}, {"video": "", "text": "b"}])
    with pytest.raises(DatasetError, match="m.jsonl: all 2 rows were skipped"):
        ManifestDataset(manifest, skip_bad=True)
    only_bad = write_jsonl(clips / "bad.jsonl", [{"video": "clips/bad.mp4", "text": "a"}])
    ds = ManifestDataset(only_bad, skip_bad=True)
    with pytest.raises(DatasetError, match="bad.jsonl: none of the 1 videos could be decoded"):
        ds[0]


def test_index_out_of_range(clips):
    manifest = write_jsonl(clips / "m.jsonl", [{"video": "clips/a", "text": "a"}])
    ds = ManifestDataset(manifest, num_frames=2, image_size=8)
    with pytest.raises(IndexError):
        ds[1]


def test_dataloader_with_collate(clips):
    manifest = write_jsonl(
        clips / "m.jsonl",
        [{"video": "clips/a", "text": "a"}, {"video": "clips/b.mp4", "text": "b"}, {"video": "clips/a", "text": "c"}],
    )
    ds = ManifestDataset(manifest, num_frames=4, image_size=16)
    batches = list(DataLoader(ds, batch_size=2, shuffle=False, num_workers=0, collate_fn=collate))
    assert [b["video"].shape for b in batches] == [(2, 3, 4, 16, 16), (1, 3, 4, 16, 16)]
    assert [b["text"] for b in batches] == [["a", "b"], ["c"]]
