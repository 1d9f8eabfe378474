"""CIFAR tasks and ResNets: architecture sizes, the original file layouts, normalisation, the
crop+flip augmentation, every loader error, and an end-to-end KD trial on a tiny image set."""

import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from kdx.errors import KdxError
from kdx.models.resnet import BasicBlock, cifar_resnet, zero_pad_shortcut
from kdx.tasks.vision import CifarTask, augmentation_plan, crop_and_flip

CIFAR10_MEAN, CIFAR10_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
DATA_CFG = OmegaConf.create({"batch_size": 8, "eval_batch_size": 16, "num_workers": 0})


# ---- ResNets ------------------------------------------------------------------------------------
def resnet_parameters_by_formula(depth: int, classes: int, width: int = 16) -> int:
    """3×3 convs without bias, BN (γ, β) after each, option-A shortcuts (no parameters), linear head."""
    n = (depth - 2) // 6
    total = 3 * width * 9 + 2 * width                      # stem conv + BN
    channels = width
    for out in (width, 2 * width, 4 * width):
        for _ in range(n):
            total += channels * out * 9 + 2 * out + out * out * 9 + 2 * out
            channels = out
    return total + channels * classes + classes


@pytest.mark.parametrize("depth,paper_millions", [(8, 0.078), (20, 0.27), (56, 0.85), (110, 1.7)])
def test_resnet_parameter_counts(depth, paper_millions):
    count = sum(p.numel() for p in cifar_resnet(depth, num_labels=10).parameters())
    assert count == resnet_parameters_by_formula(depth, 10)
    assert abs(count / 1e6 - paper_millions) / paper_millions < 0.05   # He et al. 2016, Table 6


def test_resnet_output_shapes_and_depth_check():
    x = torch.randn(3, 3, 32, 32)
    assert cifar_resnet(8, num_labels=10)(pixel_values=x).shape == (3, 10)
    assert cifar_resnet(20, num_labels=100, width=4)(pixel_values=x).shape == (3, 100)
    layers = [m for m in cifar_resnet(20, 10).modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 20                                  # 6n+2 weighted layers
    with pytest.raises(KdxError, match="6n\\+2"):
        cifar_resnet(9, num_labels=10)
    with pytest.raises(KdxError, match="pixel_values"):
        cifar_resnet(8, num_labels=10)(input_ids=torch.zeros(2, 5, dtype=torch.long))


def test_option_a_shortcut_subsamples_and_zero_pads():
    x = torch.randn(2, 16, 32, 32)
    out = zero_pad_shortcut(x, 32, 2)
    assert out.shape == (2, 32, 16, 16)
    assert torch.equal(out[:, :16], x[:, :, 0::2, 0::2])
    assert torch.count_nonzero(out[:, 16:]) == 0
    block = BasicBlock(16, 32, stride=2)
    assert block(x).shape == (2, 32, 16, 16)
    convs_and_bns = 16 * 32 * 9 + 32 * 32 * 9 + 4 * 32
    assert sum(p.numel() for p in block.parameters()) == convs_and_bns   # the shortcut adds none


# ---- a tiny CIFAR in the original layouts ---------------------------------------------------------
def write_batch(path: Path, images: np.ndarray, labels: list[int], label_key: bytes, extra=None):
    """The python-version layout: a pickled dict with bytes keys, data N×3072 uint8 (R, G, B planes)."""
    entry = {b"batch_label": b"tiny", b"data": images.reshape(len(images), -1), label_key: labels}
    entry.update(extra or {})
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def random_images(rng, n):
    return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


@pytest.fixture
def cifar10_dir(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    truth = {"train": [], "test": []}
    for i in range(1, 6):
        images, labels = random_images(rng, 6), [int(v) for v in rng.integers(0, 10, 6)]
        write_batch(folder / f"data_batch_{i}", images, labels, b"labels")
        truth["train"].append((images, labels))
    images, labels = random_images(rng, 8), [int(v) for v in rng.integers(0, 10, 8)]
    write_batch(folder / "test_batch", images, labels, b"labels")
    truth["test"].append((images, labels))
    return folder, truth


@pytest.fixture
def cifar100_dir(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    truth = {}
    for name, n in (("train", 12), ("test", 5)):
        images, fine = random_images(rng, n), [int(v) for v in rng.integers(0, 100, n)]
        write_batch(folder / name, images, fine, b"fine_labels",
                    extra={b"coarse_labels": [f // 5 for f in fine]})
        truth[name] = (images, fine)
    return folder, truth


def task_from_yaml(name: str, **overrides) -> CifarTask:
    cfg = OmegaConf.load(Path(__file__).parents[1] / "conf" / "task" / "vision" / f"{name}.yaml")
    params = {k: v for k, v in OmegaConf.to_container(cfg).items() if k not in ("defaults", "_target_")}
    params.update(augment_seed=0, **overrides)
    return CifarTask(**params)


def test_cifar10_folder_layout(cifar10_dir):
    folder, truth = cifar10_dir
    splits = task_from_yaml("cifar10", data_dir=str(folder)).splits()
    assert splits["train"]["pixel_values"].shape == (30, 3, 32, 32)
    assert splits["val"]["pixel_values"].shape == (8, 3, 32, 32)
    assert splits["train"]["pixel_values"].dtype == torch.uint8
    flat_train = np.concatenate([images.reshape(6, -1) for images, _ in truth["train"]])
    # pixel (c, row, col) of image i is byte c·1024 + row·32 + col of its row in `data`
    i, c, row, col = 13, 2, 5, 30
    assert splits["train"]["pixel_values"][i, c, row, col] == flat_train[i, c * 1024 + row * 32 + col]
    labels = [label for _, ls in truth["train"] for label in ls]
    assert splits["train"]["labels"].tolist() == labels
    assert splits["val"]["labels"].tolist() == truth["test"][0][1]
    assert splits["train"]["idx"].tolist() == list(range(30))
    # the folder above the unpacked archive works too
    parent = task_from_yaml("cifar10", data_dir=str(folder.parent)).splits()
    assert torch.equal(parent["val"]["pixel_values"], splits["val"]["pixel_values"])


def test_cifar100_folder_layout_uses_fine_labels(cifar100_dir):
    folder, truth = cifar100_dir
    task = task_from_yaml("cifar100", data_dir=str(folder), max_train_examples=10)
    splits = task.splits()
    assert task.spec.num_labels == 100
    assert splits["train"]["labels"].tolist() == truth["train"][1][:10]
    assert splits["val"]["labels"].tolist() == truth["test"][1]
    assert np.array_equal(splits["val"]["pixel_values"].numpy(), truth["test"][0])


def test_validation_batches_are_normalised_per_channel(cifar10_dir):
    folder, truth = cifar10_dir
    dm = task_from_yaml("cifar10", data_dir=str(folder)).datamodule(None, DATA_CFG)
    batch = next(iter(dm.val_dataloader()[0]))
    raw = truth["test"][0][0].astype(np.float64)
    expected = np.empty_like(raw)
    for channel in range(3):
        expected[:, channel] = (raw[:, channel] / 255.0 - CIFAR10_MEAN[channel]) / CIFAR10_STD[channel]
    assert batch["pixel_values"].dtype == torch.float32
    np.testing.assert_allclose(batch["pixel_values"].numpy(), expected, atol=1e-5)
    assert batch["labels"].dtype == torch.long and batch["idx"].tolist() == list(range(8))


# ---- augmentation -----------------------------------------------------------------------------
def test_crop_and_flip_on_a_hand_made_image():
    image = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    fill = [-1.0, -2.0]

    def expected(top, left, flip):
        padded = np.full((2, 6, 6), 0.0)
        padded[0], padded[1] = -1.0, -2.0
        padded[:, 1:5, 1:5] = image[0].numpy()
        crop = padded[:, top:top + 4, left:left + 4]
        return crop[:, :, ::-1] if flip else crop

    for top, left, flip in [(1, 1, False), (0, 0, False), (2, 2, False), (0, 2, True), (1, 1, True)]:
        out = crop_and_flip(image, torch.tensor([[top, left]]), torch.tensor([flip]), padding=1, fill=fill)
        np.testing.assert_array_equal(out[0].numpy(), expected(top, left, flip))
    # centre crop without flip is the identity
    same = crop_and_flip(image, torch.tensor([[1, 1]]), torch.tensor([False]), padding=1, fill=fill)
    assert torch.equal(same, image)
    # (0, 0): the first row and column are padding, the rest is the image shifted down-right
    shifted = crop_and_flip(image, torch.tensor([[0, 0]]), torch.tensor([False]), padding=1, fill=fill)[0]
    assert torch.all(shifted[0, 0] == -1) and torch.all(shifted[1, :, 0] == -2)
    assert torch.equal(shifted[:, 1:, 1:], image[0, :, :3, :3])


def test_augmentation_plan_is_deterministic_and_in_range():
    a, b = augmentation_plan(3, 7, 500, padding=4), augmentation_plan(3, 7, 500, padding=4)
    assert torch.equal(a.offsets, b.offsets) and torch.equal(a.flips, b.flips)
    assert a.offsets.min() >= 0 and a.offsets.max() <= 8
    assert len(set(a.offsets[:, 0].tolist())) == 9           # every shift occurs
    assert 0.35 < a.flips.float().mean() < 0.65
    assert not torch.equal(a.offsets, augmentation_plan(3, 8, 500, 4).offsets)   # next epoch
    assert not torch.equal(a.offsets, augmentation_plan(4, 7, 500, 4).offsets)   # other seed


def test_training_batches_are_random_crops_and_flips_of_the_images(cifar10_dir):
    folder, truth = cifar10_dir
    task = task_from_yaml("cifar10", data_dir=str(folder))
    dm = task.datamodule(None, DATA_CFG)
    batch = next(iter(dm.train_dataloader()))
    dm.trainer = SimpleNamespace(training=True, current_epoch=2)
    out = dm.on_before_batch_transfer(dict(batch), 0)
    again = dm.on_before_batch_transfer(dict(batch), 0)
    assert out["pixel_values"].shape == batch["pixel_values"].shape
    assert torch.equal(out["pixel_values"], again["pixel_values"])      # same seed and epoch
    mean, std = np.array(CIFAR10_MEAN)[:, None, None], np.array(CIFAR10_STD)[:, None, None]
    raw = task.splits()["train"]["pixel_values"].numpy().astype(np.float64)
    for row, idx in enumerate(batch["idx"].tolist()):
        padded = np.pad(raw[idx], ((0, 0), (4, 4), (4, 4)))          # zero (black) pixels
        candidates = [(padded[:, t:t + 32, l:l + 32] / 255.0 - mean) / std for t in range(9) for l in range(9)]
        candidates += [c[:, :, ::-1] for c in candidates]
        got = out["pixel_values"][row].numpy()
        assert min(np.abs(c - got).max() for c in candidates) < 1e-5
    dm.trainer = SimpleNamespace(training=False, current_epoch=2)          # validation: untouched
    assert torch.equal(dm.on_before_batch_transfer(dict(batch), 0)["pixel_values"], batch["pixel_values"])


# ---- errors -------------------------------------------------------------------------------------
def test_missing_folder_and_missing_file(tmp_path, cifar10_dir):
    with pytest.raises(KdxError, match="task.data_dir=.*not a folder"):
        task_from_yaml("cifar10", data_dir=str(tmp_path / "nowhere")).splits()
    folder, _ = cifar10_dir
    (folder / "data_batch_3").unlink()
    with pytest.raises(KdxError, match="data_batch_3 is missing"):
        task_from_yaml("cifar10", data_dir=str(folder)).splits()


@pytest.mark.parametrize("content,message", [
    (b"not a pickle at all", "cannot be read"),
    (pickle.dumps([1, 2, 3]), "holds a list"),
    (pickle.dumps({b"labels": [1]}), "no 'data' entry"),
    (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]}), "malformed"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2, 3]}), "malformed"),
])
def test_malformed_batch_files(cifar10_dir, content, message):
    folder, _ = cifar10_dir
    (folder / "test_batch").write_bytes(content)
    with pytest.raises(KdxError, match=message):
        task_from_yaml("cifar10", data_dir=str(folder)).splits()


def test_wrong_dataset_in_the_folder(cifar100_dir, cifar10_dir):
    folder100, _ = cifar100_dir
    with pytest.raises(KdxError, match="data_batch_1 is missing"):
        task_from_yaml("cifar10", data_dir=str(folder100)).splits()
    folder10, _ = cifar10_dir
    write_batch(folder10 / "test_batch", random_images(np.random.default_rng(2), 2), [3, 42], b"labels")
    with pytest.raises(KdxError, match="labels must lie in \\[0, 10\\)"):
        task_from_yaml("cifar10", data_dir=str(folder10)).splits()


def test_unreachable_hub_names_the_dataset_and_data_dir(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(KdxError) as err:
        task_from_yaml("cifar100").splits()
    assert "uoft-cs/cifar100" in str(err.value) and "task.data_dir" in str(err.value)


def test_hub_images_are_converted_to_channels_first(monkeypatch):
    datasets = pytest.importorskip("datasets")
    pytest.importorskip("PIL")
    rng = np.random.default_rng(5)
    arrays = {"train": rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
              "test": rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)}
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    fake = datasets.DatasetDict({
        split: datasets.Dataset.from_dict({"img": list(a), "label": list(range(len(a)))}, features=features)
        for split, a in arrays.items()})
    monkeypatch.setattr(datasets, "load_dataset", lambda hub_id, *a, **k: fake)
    splits = task_from_yaml("cifar10").splits()
    assert np.array_equal(splits["train"]["pixel_values"].numpy(), arrays["train"].transpose(0, 3, 1, 2))
    assert splits["val"]["labels"].tolist() == [0, 1, 2]


def test_text_model_on_images_is_a_clear_error(tmp_path, run_kdx, cifar10_dir):
    folder, _ = cifar10_dir
    with pytest.raises(KdxError, match="has images, no text"):
        run_kdx("task=vision/cifar10", f"task.data_dir={folder}", "model=tiny", tmp_path=tmp_path)


# ---- end to end -----------------------------------------------------------------------------------
def test_kd_trial_on_a_tiny_image_set(tmp_path, run_kdx, cifar10_dir):
    folder, _ = cifar10_dir
    results = run_kdx(
        "method=kd", "task=vision/cifar10", f"task.data_dir={folder}",
        "model.teacher.depth=8", "model.teacher.width=4", "model.student.width=4",
        "model.batch_size=16", "trainer.max_epochs=2", "teacher_training.max_epochs=1",
        tmp_path=tmp_path)
    assert results["status"] == "completed" and results["model"] == "resnet110_to_resnet8"
    assert results["main_metric"]["name"] == "val/acc" and 0.0 <= results["main_metric"]["value"] <= 1.0
    assert results["steps"] == 4                                        # 30 images / 16 → 2 per epoch
    assert results["params"]["student"] == resnet_parameters_by_formula(8, 10, width=4)
    optim = results["config"]["optim"]
    assert (optim["name"], optim["weight_decay"], optim["schedule"], optim["lr"]) == ("sgd", 1e-4, "multistep", 0.1)
    assert results["config"]["trainer"]["gradient_clip_val"] is None
    assert (tmp_path / "run" / "results.json").exists()
