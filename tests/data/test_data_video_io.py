import numpy as np
import pytest
import torch
from PIL import Image
from video_clip_helpers import frame_index, pattern

from t2s.data import VideoDecodeError, read_video, write_video
from t2s.data.video_io import sample_indices, write_frames


def as_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1


def test_sample_indices_spread_uniformly_and_pad_with_last_frame():
    assert sample_indices(16, 16).tolist() == list(range(16))
    assert sample_indices(100, 4).tolist() == [12, 37, 62, 87]
    assert sample_indices(3, 6).tolist() == [0, 1, 2, 2, 2, 2]
    for total in (1, 5, 17, 64):
        for count in (1, 4, 16):
            indices = sample_indices(total, count)
            assert len(indices) == count
            assert indices.min() >= 0 and indices.max() < total
            assert (np.diff(indices) >= 0).all()


# Mean absolute error allowed after a round trip, in [-1, 1] units (0.03 ~ 4 of 255 levels).
@pytest.mark.parametrize("suffix, tolerance", [(".mp4", 0.03), (".avi", 0.03), (".webm", 0.03), (".gif", 0.03)])
def test_roundtrip_through_a_file(tmp_path, suffix, tolerance):
    source = as_tensor(pattern(8, 32, 32))
    path = write_video(tmp_path / f"clip{suffix}", source, fps=8)
    video = read_video(path, num_frames=8, image_size=32)
    assert video.shape == (3, 8, 32, 32) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1
    assert (video - source).abs().mean() < tolerance
    assert frame_index(video, 8).tolist() == list(range(8))


def test_frame_folder_roundtrip_is_lossless(tmp_path):
    source = as_tensor(pattern(5, 24, 24))
    folder = write_video(tmp_path / "frames", source)
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:05d}.png" for i in range(5)]
    assert torch.allclose(read_video(folder, 5, 24), source, atol=1e-6)


def test_write_video_clips_out_of_range_values(tmp_path):
    source = torch.full((3, 2, 8, 8), 3.0)
    source[:, 1] = -3.0
    video = read_video(write_video(tmp_path / "frames", source), 2, 8)
    assert video[:, 0].eq(1).all() and video[:, 1].eq(-1).all()


def test_sampling_from_a_long_frame_folder(tmp_path):
    folder = write_frames(tmp_path / "long", pattern(40, 8, 8))
    video = read_video(folder, num_frames=8, image_size=8)
    assert frame_index(video, 40).tolist() == sample_indices(40, 8).tolist()


def test_sampling_from_a_long_mp4(tmp_path):
    path = write_frames(tmp_path / "long.mp4", pattern(24, 16, 16))
    video = read_video(path, num_frames=6, image_size=16)
    assert video.shape == (3, 6, 16, 16)
    assert np.abs(frame_index(video, 24) - sample_indices(24, 6)).max() <= 1


def test_short_clip_repeats_its_last_frame(tmp_path):
    video = read_video(write_frames(tmp_path / "short", pattern(3, 8, 8)), num_frames=5, image_size=8)
    assert frame_index(video, 3).tolist() == [0, 1, 2, 2, 2]


def test_gif_keeps_repeated_frames(tmp_path):
    # GIF writers merge identical consecutive frames; reading must restore them.
    frames = pattern(3, 16, 16)[[0, 0, 0, 1, 2]]
    video = read_video(write_frames(tmp_path / "held.gif", frames), num_frames=5, image_size=16)
    assert frame_index(video, 3).tolist() == [0, 0, 0, 1, 2]


def test_frame_folder_is_read_in_natural_order(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for name, level in (("img1.png", 10), ("img2.jpg", 120), ("img10.png", 250)):
        Image.new("RGB", (8, 8), (level, level, level)).save(folder / name)
    (folder / "notes.txt").write_text("not a frame")
    video = read_video(folder, num_frames=3, image_size=8)
    levels = ((video[0].mean(dim=(1, 2)) + 1) * 127.5).round().tolist()
    assert levels == pytest.approx([10, 120, 250], abs=2)


@pytest.mark.parametrize("name", ["wide.mp4", "wide"])
def test_resize_keeps_aspect_and_crops_the_centre(tmp_path, name):
    # 64x32 frames: red | green (middle half) | blue. Shorter side -> 16, centre crop keeps green.
    frames = np.zeros((2, 32, 64, 3), np.uint8)
    frames[:, :, :16, 0] = 255
    frames[:, :, 16:48, 1] = 255
    frames[:, :, 48:, 2] = 255
    video = read_video(write_frames(tmp_path / name, frames), num_frames=2, image_size=16)
    assert video.shape == (3, 2, 16, 16)
    centre = video[:, :, :, 2:14]  # away from the colour edges, which codecs and filters blur
    assert centre[1].min() > 0.8 and centre[0].max() < -0.8 and centre[2].max() < -0.8


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(VideoDecodeError, match="nothing.mp4.*no such file"):
        read_video(tmp_path / "nothing.mp4", 4, 16)


def test_garbage_file_names_the_file_and_ffmpeg_reason(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"this is not a video" * 10)
    with pytest.raises(VideoDecodeError, match="broken.mp4.*FFmpeg") as info:
        read_video(path, 4, 16)
    assert info.value.path == path


def test_empty_folder_and_unreadable_frame(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoDecodeError, match="empty.*no frame images"):
        read_video(empty, 4, 16)
    folder = write_frames(tmp_path / "frames", pattern(2, 8, 8))
    (folder / "00002.png").write_bytes(b"truncated")
    with pytest.raises(VideoDecodeError, match="00002.png"):
        read_video(folder, 3, 8)


def test_write_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"\[3, T, H, W\]"):
        write_video(tmp_path / "a.mp4", torch.zeros(4, 2, 8, 8))
    with pytest.raises(ValueError, match="even width and height"):
        write_video(tmp_path / "odd.mp4", torch.zeros(3, 2, 9, 9))
    with pytest.raises(ValueError, match="unsupported suffix"):
        write_video(tmp_path / "a.mov", torch.zeros(3, 2, 8, 8))
    folder = write_video(tmp_path / "frames", torch.zeros(3, 2, 8, 8))
    with pytest.raises(FileExistsError, match="already holds images"):
        write_video(folder, torch.zeros(3, 2, 8, 8))
    assert not list(tmp_path.glob(".*partial*"))
