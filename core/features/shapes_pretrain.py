"""Pretraining the shapes encoder, and linear probes measuring what its features say about a scene.

The supervision is what captions talk about: for the objects in left-to-right order, whether each slot
holds an object, its shape, colour, size and coarse row; the object count; and for each object pair
whether one is clearly above the other (the rule captions use). Dense per-cell heads (what covers each
cell of the final conv map) add a local signal that makes shapes learnable sooner, and every image is
also seen mirrored left-right (with mirrored labels). One cross-entropy per head, summed.

Dimension legend: M images, B batch, S image side, D feature width, J slots of a head, K classes.
"""
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from core.features.shapes_cnn import MultiHead, ShapesEncoder, dense_heads, heads, object_pairs_of
from core.shapes_world.captions import vertical_relation
from core.shapes_world.spec import DEFAULT_WORLD

IGNORE = -100
_VERTICAL_CLASSES = {None: 0, "above": 1, "below": 2}


@dataclass(frozen=True)
class HeadTrainingConfig:
    """How heads (with or without the CNN under them) are trained: AdamW with a one-cycle schedule."""
    epochs: int = 4
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    progress: bool = True


def scene_labels(scenes, image_size, spec=DEFAULT_WORLD):
    """Per-head class labels of M scenes (objects listed left to right) of the world ``spec`` (a WorldSpec).

    Returns:
    - labels: dict name -> int64 array of shape (M, J) for each head of ``heads(spec)``; IGNORE where the
      slot is empty (attributes of a missing object, pairs with a missing object).
    """
    labels = {name: np.full((len(scenes), slots), IGNORE, dtype=np.int64)
              for name, (slots, _) in heads(spec).items()}
    labels["present"][:] = 0
    for i, scene in enumerate(scenes):
        objects = scene["objects"]
        labels["count"][i, 0] = len(objects) - 1
        for j, obj in enumerate(objects):
            labels["present"][i, j] = 1
            labels["shape"][i, j] = spec.shapes.index(obj["shape"])
            labels["colour"][i, j] = spec.colours.index(obj["colour"])
            labels["size"][i, j] = spec.sizes.index(obj["size"])
            labels["row"][i, j] = min(int(3 * obj["y"] / image_size), 2)
        for p, (a, b) in enumerate(object_pairs_of(spec)):
            if b < len(objects):
                relation = vertical_relation(objects[a], objects[b], image_size)
                labels["vertical"][i, p] = _VERTICAL_CLASSES[relation]
    return labels


def dense_labels(scenes, image_size, grid, spec=DEFAULT_WORLD):
    """Per-cell labels of the dense heads on a (grid, grid) map, cells in row-major order.

    A cell belongs to an object when its centre lies within the object's radius ``r``, and the cell
    holding the object's centre always does; class 0 is "no object", class c + 1 is attribute c.

    Returns:
    - labels: dict name -> int64 array of shape (M, grid * grid) for each of ``dense_heads(spec)``.
    """
    cell = image_size / grid
    centres = (np.arange(grid) + 0.5) * cell
    labels = {name: np.zeros((len(scenes), grid, grid), dtype=np.int64) for name in dense_heads(spec)}
    for i, scene in enumerate(scenes):
        for obj in scene["objects"]:
            covered = np.hypot(centres[None, :] - obj["x"], centres[:, None] - obj["y"]) <= obj["r"]  # (g, g)
            covered[min(int(obj["y"] // cell), grid - 1), min(int(obj["x"] // cell), grid - 1)] = True
            labels["cell_shape"][i][covered] = spec.shapes.index(obj["shape"]) + 1
            labels["cell_colour"][i][covered] = spec.colours.index(obj["colour"]) + 1
            labels["cell_size"][i][covered] = spec.sizes.index(obj["size"]) + 1
    return {name: values.reshape(len(scenes), grid * grid) for name, values in labels.items()}


def mirror_scenes(scenes, image_size):
    """The scenes of the left-right mirrored images (x -> S - x, objects re-sorted left to right)."""
    return [{**scene, "objects": sorted(({**obj, "x": image_size - obj["x"]} for obj in scene["objects"]),
                                        key=lambda obj: obj["x"])} for scene in scenes]


class MirroredImages:
    """M images followed by their M left-right mirror images: a sequence of 2M rows for training.

    Mirroring doubles the distinct training scenes for free; the labels of row M + i come from
    ``mirror_scenes``. Indexed by sorted integer arrays, as ``train_heads`` does.
    """

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return 2 * len(self.images)

    def __getitem__(self, rows):
        num = len(self.images)
        plain, mirrored = rows[rows < num], rows[rows >= num] - num
        return np.concatenate([self.images[plain], self.images[mirrored][:, :, ::-1]])   # (B, S, S, 3)


def _multihead_loss(logits, labels):
    """Sum over heads of the mean cross-entropy of labelled slots; logits (B, J, K), labels (B, J)."""
    loss = 0.0
    for name, head_logits in logits.items():
        classes = head_logits.shape[-1]
        loss = loss + nn.functional.cross_entropy(
            head_logits.reshape(-1, classes), labels[name].reshape(-1), ignore_index=IGNORE)  # (B*J, K)
    return loss


def _batch_labels(labels, index):
    """Rows ``index`` of every label array, as torch tensors."""
    return {name: torch.from_numpy(values[index]) for name, values in labels.items()}


def train_heads(module, forward, inputs, labels, config, prepare, desc="train"):
    """Minibatch training of ``module`` so that ``forward(prepare(inputs[rows]))`` predicts ``labels``.

    Inputs:
    - module: nn.Module holding every trained parameter (put in train mode here).
    - forward: callable x -> dict name -> logits of shape (B, J, K).
    - inputs: array with M rows (uint8 images (M, S, S, 3) or features (M, D)).
    - labels: dict name -> int64 array of shape (M, J), from ``scene_labels``.
    - config: HeadTrainingConfig; its seed orders the minibatches.
    - prepare: callable turning a numpy batch of inputs into the tensor ``forward`` takes.
    """
    rng = np.random.default_rng(config.seed)
    num_rows = len(inputs)
    steps = -(-num_rows // config.batch_size)
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr,
                                                   total_steps=config.epochs * steps)
    module.train()
    with tqdm(total=config.epochs * steps, desc=desc, leave=False, disable=not config.progress) as bar:
        for _ in range(config.epochs):
            order = rng.permutation(num_rows)
            for start in range(0, num_rows, config.batch_size):
                # Sorted rows read faster from arrays and are required by h5py datasets.
                rows = np.sort(order[start:start + config.batch_size])
                loss = _multihead_loss(forward(prepare(inputs[rows])), _batch_labels(labels, rows))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}")
    module.eval()


@torch.no_grad()
def predict_heads(forward, inputs, prepare, batch_size=256):
    """Predicted class per head slot: dict name -> int64 array of shape (M, J)."""
    predictions = {}
    for start in range(0, len(inputs), batch_size):
        logits = forward(prepare(inputs[start:start + batch_size]))
        for name, head_logits in logits.items():
            predictions.setdefault(name, []).append(head_logits.argmax(dim=-1).numpy())  # (B, J, K) -> (B, J)
    return {name: np.concatenate(parts) for name, parts in predictions.items()}


def head_accuracy(predictions, labels):
    """Accuracy of each head over labelled slots, and "scene": the share of images with every slot right."""
    accuracy, scene_right = {}, None
    for name, truth in labels.items():
        labelled = truth != IGNORE
        right = (predictions[name] == truth) | ~labelled                  # (M, J)
        accuracy[name] = float(right[labelled].mean())
        scene_right = right.all(axis=1) if scene_right is None else scene_right & right.all(axis=1)
    accuracy["scene"] = float(scene_right.mean())
    return accuracy


def pretrain_encoder(images, scenes, encoder_config, config, dense_first=None):
    """Train a fresh ShapesEncoder on rendered scenes.

    Inputs:
    - images: uint8 array of shape (M, S, S, 3); training also sees their mirror images.
    - scenes: the M scenes the images were rendered from (labels only; never fed to the network).
    - encoder_config: ShapesEncoderConfig; config: HeadTrainingConfig (its seed also seeds the weights).
    - dense_first: HeadTrainingConfig of a first phase training the trunk on the dense heads alone, or None.
      Where many objects crowd a scene, the slot heads start as near-noise (which object is third from the
      left?) and their gradients drown the cells' local signal; the trunk learns shapes far sooner alone.

    Returns:
    - encoder: the trained ShapesEncoder, in eval mode.
    """
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        encoder = ShapesEncoder(encoder_config).to(memory_format=torch.channels_last)
    size = encoder_config.image_size
    grid = encoder_config.grid
    both = scenes + mirror_scenes(scenes, size)
    spec = encoder_config.spec
    labels = {**scene_labels(both, size, spec), **dense_labels(both, size, grid, spec)}
    if dense_first is not None:
        train_heads(encoder, encoder.predict_dense, MirroredImages(images), labels, dense_first, encoder.preprocess,
                    desc="pretrain encoder (dense heads)")
    train_heads(encoder, encoder.predict, MirroredImages(images), labels, config, encoder.preprocess,
                desc="pretrain encoder")
    return encoder


def evaluate_encoder(encoder, images, scenes):
    """Per-head accuracy of the encoder's own heads on (held-out) images and their scenes."""
    predictions = predict_heads(encoder.predict, images, encoder.preprocess)
    return head_accuracy(predictions, scene_labels(scenes, encoder.config.image_size, encoder.config.spec))


def linear_probe(train_features, train_scenes, val_features, val_scenes, image_size, config, rng=None,
                 spec=DEFAULT_WORLD):
    """Accuracy on val of linear heads trained on features (e.g. the PCA-512 ones).

    Inputs:
    - train_features: float array of shape (M, D); val_features: float array of shape (Mv, D).
    - train_scenes, val_scenes: the scenes of those rows; image_size: int S.
    - config: HeadTrainingConfig for the probe.
    - rng: np.random.Generator; when given, training rows are shuffled against their labels (a blind
      baseline: what the label statistics alone give).
    - spec: the WorldSpec of the scenes' world (its heads).

    Returns:
    - accuracy: dict as from ``head_accuracy``.
    """
    mean, std = train_features.mean(axis=0), train_features.std(axis=0) + 1e-6
    def prepare(rows):
        return torch.from_numpy(((rows - mean) / std).astype(np.float32))
    if rng is not None:
        train_features = train_features[rng.permutation(len(train_features))]
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        probe = MultiHead(train_features.shape[1], heads(spec))
    labels = scene_labels(train_scenes, image_size, spec)
    train_heads(probe, probe, train_features, labels, config, prepare, desc="linear probe")
    return head_accuracy(predict_heads(probe, val_features, prepare), scene_labels(val_scenes, image_size, spec))

