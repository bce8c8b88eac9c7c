"""What a unit trains on, for the wording of messages: sign-language video (the plan's own
domain: hands and fingers carry a sign's meaning) or anything else (CIFAR, faces, latents), where
advice speaks of fine detail in general."""

from __future__ import annotations

import re

from optimizer_tool.index import UnitIndex
from optimizer_tool.knowledge.configured import memo

SIGN_WORDS = re.compile(
    r"(^|[_.])(glosse?s?|signers?|how2sign|phoenix\w*|sign_?language|signlang|text2sign|t2s|sign_videos?)([_.]|$)",
    re.I,
)


def sign_language(index: UnitIndex) -> bool:
    """The unit names sign-language data or models: glosses, signers, How2Sign, PHOENIX-2014T."""

    def compute() -> bool:
        names = {a.target for a in index.assigns} | {s.name for s in index.settings} | set(index.names_used())
        names |= {f.path.stem for f in index.files}
        return any(SIGN_WORDS.search(n) for n in names)

    return memo(index, "domain.sign", compute)


# Names of pose/motion sequence data (joint coordinates per frame, not pixels): MDM's ``njoints``,
# HumanML3D/KIT, SMPL parameters, gesture and skeleton keypoints.
SEQUENCE_WORDS = re.compile(
    r"^(n_?joints|num_joints|nfeats|pose_dim|n_poses|humanml\w*|kit_?ml|smpl\w*|skeleton\w*|keypoints?|"
    r"motion_dim|\w*_motion_dataset|\w*Motion\w*Dataset|\w*Pose\w*Dataset|\w*Gesture\w*)$",
    re.I,
)


def pose_sequences(index: UnitIndex) -> str | None:
    """A name showing the unit trains on pose or motion sequences (joint coordinates per frame)
    rather than images, or None."""

    def compute() -> str | None:
        names = {a.target.rsplit(".", 1)[-1] for a in index.assigns} | {s.name for s in index.settings}
        names |= {n.rsplit(".", 1)[-1] for n in index.names_used()}
        return next((n for n in sorted(names) if SEQUENCE_WORDS.match(n)), None)

    return memo(index, "domain.pose_sequences", compute)


# What shows a unit handles pixels: a call into an image or video library or an image-based diffusion
# package, a 2D/3D convolution built.
PIXEL_LIBRARIES = (
    "torchvision",
    "PIL",
    "cv2",
    "imageio",
    "skimage",
    "kornia",
    "decord",
    "timm",
    "diffusers",
    "matplotlib.image",
    "denoising_diffusion_pytorch",
    "guided_diffusion",
    "improved_diffusion",
    "k_diffusion",
    "imagen_pytorch",
    "video_diffusion_pytorch",
)
PIXEL_LAYERS = re.compile(
    r"^(Conv[23]d|ConvTranspose[23]d|conv_nd|Upsample|PixelShuffle|interpolate|AvgPool2d|MaxPool2d)$"
)
# the unit builds a network of its own (not a model handed in by a caller it cannot see)
OWN_NETWORK = re.compile(r"^(Linear|Conv1d|Transformer\w*|LSTM|GRU|Embedding|MultiheadAttention)$")


def without_pixels(index: UnitIndex) -> bool:
    """The unit builds its own network and nothing it calls touches pixels: tabular (tab-ddpm's MLP),
    time series (CSDI), point clouds (PointNet): a training resolution means nothing there."""

    def compute() -> bool:
        own = False
        for call in index.calls:
            if PIXEL_LAYERS.match(call.method) or any(q.startswith(PIXEL_LIBRARIES) for q in call.qualnames):
                return False
            own = own or bool(OWN_NETWORK.match(call.method))
        return own

    return memo(index, "domain.without_pixels", compute)


# Data that is no image: audio, molecules and proteins, point clouds, control trajectories. Named by
# the libraries the unit calls or by its own names (``mel``, ``atoms``, ``pointcloud``).
OTHER_DATA_LIBRARIES = {
    "torchaudio": "audio",
    "librosa": "audio",
    "soundfile": "audio",
    "scipy.io.wavfile": "audio",
    "rdkit": "molecules",
    "torch_geometric": "graphs",
    "dgl": "graphs",
    "gym": "control trajectories",
    "gymnasium": "control trajectories",
    "d4rl": "control trajectories",
    "mujoco": "control trajectories",
}
OTHER_DATA_WORDS = {
    "audio": re.compile(r"^(mels?|mel_?spec\w*|\w*spectrogram\w*|\w*waveforms?|audio\w*|wavs?|fbank|stft)$", re.I),
    "molecules": re.compile(r"^(atoms?|atom_\w+|\w+_atoms?|molecul\w*|qm9\w*)$", re.I),
    "point clouds": re.compile(r"^(point_?clouds?|pointclouds?|n_?points|num_points)$", re.I),
    "control trajectories": re.compile(r"^(trajector(y|ies)|observation_dim|action_dim|obs_dim)$", re.I),
}
# reading or transforming images and video (writing a GIF of molecules with imageio is not)
IMAGE_DATA = re.compile(
    r"^(PIL\.Image\.open|cv2\.(imread|VideoCapture)|imageio\.(v2\.|v3\.)?(imread|mimread|get_reader|imiter)|"
    r"decord\.\w+|torchvision\.(datasets|transforms|io)\.[\w.]+|kornia\.[\w.]+|skimage\.io\.imread)$"
)


def non_image_data(index: UnitIndex) -> str | None:
    """What the unit trains on when it is plainly no image: audio (``torchaudio``, ``mel``), molecules
    (``rdkit``, ``atoms``), point clouds, control trajectories; None where it also reads images (an
    audio-driven video model reads both) or shows none of these."""

    def compute() -> str | None:
        found = None
        for call in index.calls:
            if any(IMAGE_DATA.match(q) for q in call.qualnames):
                return None
            for q in call.qualnames:
                root = next((lib for lib in OTHER_DATA_LIBRARIES if q == lib or q.startswith(lib + ".")), None)
                if root is not None and found is None:
                    found = f"{OTHER_DATA_LIBRARIES[root]} (`{q}`)"
        if found is not None:
            return found
        names = sorted({a.target.rsplit(".", 1)[-1] for a in index.assigns} | {s.name for s in index.settings})
        for kind, words in OTHER_DATA_WORDS.items():
            word = next((n for n in names if words.match(n)), None)
            if word is not None:
                return f"{kind} (`{word}`)"
        return None

    return memo(index, "domain.non_image_data", compute)
