"""PHOENIX-2014-T and How2Sign read from tiny fake copies of their on-disk layouts."""

import pytest

from t2s.data import DatasetError, How2SignDataset, PhoenixDataset

PHOENIX_HEADER = "name|video|start|end|speaker|orth|translation"
H2S_HEADER = "VIDEO_ID\tVIDEO_NAME\tSENTENCE_ID\tSENTENCE_NAME\tSTART_REALIGNED\tEND_REALIGNED\tSENTENCE"


@pytest.fixture
def phoenix(tmp_path, make_clip):
    """Two train clips: one with frames directly in {name}/ (the 2014T release), one in {name}/1/."""
    root = tmp_path / "PHOENIX-2014-T"
    frames = "features/fullFrame-210x260px/train"
    make_clip(f"PHOENIX-2014-T/{frames}/01April_2010_Thursday_heute-6694", num_frames=5, height=26, width=21)
    make_clip(f"PHOENIX-2014-T/{frames}/11August_2010_Wednesday_tagesschau-2/1", num_frames=3, height=26, width=21)
    corpus = root / "annotations" / "manual" / "PHOENIX-2014-T.train.corpus.csv"
    corpus.parent.mkdir(parents=True)
    corpus.write_text(
        "\n".join(
            [
                PHOENIX_HEADER,
                "01April_2010_Thursday_heute-6694|01April_2010_Thursday_heute-6694/1/*.png|-1|-1|Signer04|"
                "REGEN MORGEN|morgen regnet es",
                "11August_2010_Wednesday_tagesschau-2|11August_2010_Wednesday_tagesschau-2/1/*.png|-1|-1|Signer08|"
                'SONNE|die "sonne" scheint',
            ]
        )
        + "\n"
    )
    return root


def test_phoenix_reads_both_frame_layouts(phoenix):
    ds = PhoenixDataset(phoenix, split="train", num_frames=4, image_size=16)
    assert len(ds) == 2
    assert [s.video.parts[-1] for s in ds.samples] == ["01April_2010_Thursday_heute-6694", "1"]
    items = [ds[0], ds[1]]
    assert all(item["video"].shape == (3, 4, 16, 16) for item in items)
    assert [item["text"] for item in items] == ["morgen regnet es", 'die "sonne" scheint']


def test_phoenix_glosses(phoenix):
    ds = PhoenixDataset(phoenix, text_field="orth", num_frames=2, image_size=8)
    assert [s.text for s in ds.samples] == ["REGEN MORGEN", "SONNE"]


def test_phoenix_missing_split_and_bad_arguments(phoenix):
    with pytest.raises(DatasetError, match=r"dev split not found: .*PHOENIX-2014-T.dev.corpus.csv is missing"):
        PhoenixDataset(phoenix, split="dev")
    with pytest.raises(ValueError, match="split must be one of"):
        PhoenixDataset(phoenix, split="val")
    with pytest.raises(ValueError, match="text_field must be one of"):
        PhoenixDataset(phoenix, text_field="gloss")


def test_phoenix_missing_frames_name_the_corpus_row(phoenix):
    corpus = phoenix / "annotations" / "manual" / "PHOENIX-2014-T.train.corpus.csv"
    with corpus.open("a") as f:
        f.write("gone|gone/1/*.png|-1|-1|Signer01|NEBEL|nebel\n")
    expected = r"(?s)PHOENIX-2014-T.train.corpus.csv: 1 of 3 rows.*line 4: video not found"
    with pytest.raises(DatasetError, match=expected):
        PhoenixDataset(phoenix)
    ds = PhoenixDataset(phoenix, skip_bad=True)
    assert len(ds) == 2 and [s.line for s in ds.skipped] == [4]


@pytest.fixture
def how2sign(tmp_path, make_clip):
    root = tmp_path / "how2sign"
    make_clip("how2sign/clips/-fZc293MpJk_0-1-rgb_front.mp4", num_frames=6)
    make_clip("how2sign/clips/-fZc293MpJk_2-1-rgb_front.mp4", num_frames=3)
    (root / "how2sign_realigned_train.csv").write_text(
        "\n".join(
            [
                H2S_HEADER,
                "-fZc293MpJk\t-fZc293MpJk-1-rgb_front\t-fZc293MpJk_0\t-fZc293MpJk_0-1-rgb_front\t0.0\t1.7\tHi.",
                "-fZc293MpJk\t-fZc293MpJk-1-rgb_front\t-fZc293MpJk_2\t-fZc293MpJk_2-1-rgb_front\t5.1\t8.0\t"
                'I\'m "Rachel" and this is how to sign.',
            ]
        )
        + "\n"
    )
    return root


def test_how2sign_reads_clips(how2sign):
    ds = How2SignDataset(how2sign, split="train", num_frames=4, image_size=16)
    assert len(ds) == 2
    assert ds[0]["video"].shape == (3, 4, 16, 16)
    assert [s.text for s in ds.samples] == ["Hi.", 'I\'m "Rachel" and this is how to sign.']


def test_how2sign_finds_the_download_layout_and_explicit_paths(how2sign, tmp_path):
    (how2sign / "clips").rename(tmp_path / "moved")
    with pytest.raises(DatasetError, match=r"train clips folder not found; looked for:\n.*clips"):
        How2SignDataset(how2sign)
    ds = How2SignDataset(how2sign, clips_dir=tmp_path / "moved", num_frames=2, image_size=8)
    assert len(ds) == 2
    (tmp_path / "moved").rename(tmp_path / "raw_videos")
    (how2sign / "train_rgb_front_clips").mkdir()
    (tmp_path / "raw_videos").rename(how2sign / "train_rgb_front_clips" / "raw_videos")
    assert len(How2SignDataset(how2sign, num_frames=2, image_size=8)) == 2
    with pytest.raises(DatasetError, match="val annotations not found"):
        How2SignDataset(how2sign, split="val")


def test_how2sign_missing_clip_names_the_csv_row(how2sign):
    (how2sign / "clips" / "-fZc293MpJk_2-1-rgb_front.mp4").unlink()
    with pytest.raises(DatasetError, match=r"how2sign_realigned_train.csv: 1 of 2 rows.*\n  line 3: video not found"):
        How2SignDataset(how2sign)
    assert len(How2SignDataset(how2sign, skip_bad=True)) == 1


def test_how2sign_missing_column(how2sign):
    csv_path = how2sign / "how2sign_realigned_train.csv"
    csv_path.write_text(csv_path.read_text().replace("SENTENCE_NAME", "CLIP"))
    with pytest.raises(DatasetError, match="missing column 'SENTENCE_NAME'.*expected SENTENCE_NAME, SENTENCE"):
        How2SignDataset(how2sign)
