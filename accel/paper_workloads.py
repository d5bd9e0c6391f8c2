"""The ANT paper's evaluation workloads and their per-layer precision, as hand-written layer lists.

Six networks (eight rows: BERT on MNLI, CoLA and SST-2), with the layer order of the ANT
simulator's benchmark files (clevercool/ANT-Quantization, ant_simulator/bitfusion/src/benchmarks)
and the per-layer bit widths each design runs them at:

- ANT: 4-bit everywhere except the layers its type selection keeps at 8 bits ("ANT4-8": first and
  last layers of CNNs, and a few transformer layers, listed below);
- BitFusion: int-only, so most layers need 8 bits; the layers that tolerate int4 are listed;
- OLAccel: 4-bit with first and last layers at 8 (outliers run on its extra high-precision PEs);
- AdaFloat: 8-bit everywhere; BiScaled: 6-bit everywhere.

Layer shapes are facts about the networks (VGG-16, ResNet-18/50, Inception-v3 at 299x299,
ViT-B/16 at 224x224, BERT-base at sequence length 128); the ResNets match `frugal.models.resnet` layer
for layer, which the accel system's ANT table (`frugal.scripts.systems.accel.ant_table`) checks against a
trace of our own models. We add the
ViT patch-embedding convolution (8-bit for every design); the ANT benchmark lists omit it for ANT.
"""

from __future__ import annotations

from frugal.accel.workload import GemmOp, Workload, conv_layer, linear_layer

MODELS = ("vgg16", "resnet18", "resnet50", "inceptionv3", "vit", "bert_mnli", "bert_cola", "bert_sst2")
MODEL_LABELS = {
    "vgg16": "VGG16",
    "resnet18": "ResNet18",
    "resnet50": "ResNet50",
    "inceptionv3": "InceptionV3",
    "vit": "ViT",
    "bert_mnli": "BERT-MNLI",
    "bert_cola": "BERT-CoLA",
    "bert_sst2": "BERT-SST-2",
}


class _Builder:
    def __init__(self):
        self.layers: list[GemmOp] = []

    def conv(self, cin, cout, kernel, in_hw, out_hw):
        name = f"conv{len(self.layers)}"
        self.layers.append(
            conv_layer(name, in_channels=cin, out_channels=cout, kernel=kernel, in_hw=in_hw, out_hw=out_hw)
        )

    def linear(self, rows, fin, fout):
        self.layers.append(linear_layer(f"fc{len(self.layers)}", rows=rows, in_features=fin, out_features=fout))

    def workload(self) -> Workload:
        return Workload(gemms=tuple(self.layers))


def vgg16() -> Workload:
    b = _Builder()
    cfg = [
        (3, 64, 224),
        (64, 64, 224),
        (64, 128, 112),
        (128, 128, 112),
        (128, 256, 56),
        (256, 256, 56),
        (256, 256, 56),
        (256, 512, 28),
        (512, 512, 28),
        (512, 512, 28),
        (512, 512, 14),
        (512, 512, 14),
        (512, 512, 14),
    ]
    for cin, cout, hw in cfg:
        b.conv(cin, cout, 3, (hw, hw), (hw, hw))
    b.linear(1, 25088, 4096)
    b.linear(1, 4096, 4096)
    b.linear(1, 4096, 1000)
    return b.workload()


def _resnet(blocks, bottleneck: bool) -> Workload:
    b = _Builder()
    b.conv(3, 64, 7, (224, 224), (112, 112))
    cin, hw = 64, 56
    for stage, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
        for i in range(count):
            stride = 2 if (i == 0 and stage > 0) else 1
            out_hw = hw // stride
            cout = width * (4 if bottleneck else 1)
            if bottleneck:
                b.conv(cin, width, 1, (hw, hw), (hw, hw))
                b.conv(width, width, 3, (hw, hw), (out_hw, out_hw))
                b.conv(width, cout, 1, (out_hw, out_hw), (out_hw, out_hw))
            else:
                b.conv(cin, width, 3, (hw, hw), (out_hw, out_hw))
                b.conv(width, cout, 3, (out_hw, out_hw), (out_hw, out_hw))
            if stride != 1 or cin != cout:
                b.conv(cin, cout, 1, (hw, hw), (out_hw, out_hw))
            cin, hw = cout, out_hw
    b.linear(1, cin, 1000)
    return b.workload()


def resnet18() -> Workload:
    return _resnet((2, 2, 2, 2), bottleneck=False)


def resnet50() -> Workload:
    return _resnet((3, 4, 6, 3), bottleneck=True)


def inceptionv3() -> Workload:
    b = _Builder()
    b.conv(3, 32, 3, (299, 299), (149, 149))
    b.conv(32, 32, 3, (149, 149), (147, 147))
    b.conv(32, 64, 3, (147, 147), (147, 147))
    b.conv(64, 80, 1, (73, 73), (73, 73))
    b.conv(80, 192, 3, (73, 73), (71, 71))
    s = (35, 35)
    for cin, pool in ((192, 32), (256, 64), (288, 64)):  # Inception-A
        b.conv(cin, 64, 1, s, s)
        b.conv(cin, 48, 1, s, s)
        b.conv(48, 64, 5, s, s)
        b.conv(cin, 64, 1, s, s)
        b.conv(64, 96, 3, s, s)
        b.conv(96, 96, 3, s, s)
        b.conv(cin, pool, 1, s, s)
    t = (17, 17)  # Inception-B (grid reduction)
    b.conv(288, 384, 3, s, t)
    b.conv(288, 64, 1, s, s)
    b.conv(64, 96, 3, s, s)
    b.conv(96, 96, 3, s, t)
    for c7 in (128, 160, 160, 192):  # Inception-C (factorised 7x7)
        b.conv(768, 192, 1, t, t)
        b.conv(768, c7, 1, t, t)
        b.conv(c7, c7, (1, 7), t, t)
        b.conv(c7, 192, (7, 1), t, t)
        b.conv(768, c7, 1, t, t)
        b.conv(c7, c7, (7, 1), t, t)
        b.conv(c7, c7, (1, 7), t, t)
        b.conv(c7, c7, (7, 1), t, t)
        b.conv(c7, 192, (1, 7), t, t)
        b.conv(768, 192, 1, t, t)
    e = (8, 8)  # Inception-D (grid reduction)
    b.conv(768, 192, 1, t, t)
    b.conv(192, 320, 3, t, e)
    b.conv(768, 192, 1, t, t)
    b.conv(192, 192, (1, 7), t, t)
    b.conv(192, 192, (7, 1), t, t)
    b.conv(192, 192, 3, t, e)
    for cin in (1280, 2048):  # Inception-E
        b.conv(cin, 320, 1, e, e)
        b.conv(cin, 384, 1, e, e)
        b.conv(384, 384, (1, 3), e, e)
        b.conv(384, 384, (3, 1), e, e)
        b.conv(cin, 448, 1, e, e)
        b.conv(448, 384, 3, e, e)
        b.conv(384, 384, (1, 3), e, e)
        b.conv(384, 384, (3, 1), e, e)
        b.conv(cin, 192, 1, e, e)
    b.linear(1, 2048, 1000)
    return b.workload()


def vit() -> Workload:
    """ViT-B/16: patch embedding, 12 blocks of (qkv, proj, fc1, fc2) on 197 tokens, classifier."""
    b = _Builder()
    b.conv(3, 768, 16, (224, 224), (14, 14))
    for _ in range(12):
        b.linear(197, 768, 2304)
        b.linear(197, 768, 768)
        b.linear(197, 768, 3072)
        b.linear(197, 3072, 768)
    b.linear(1, 768, 1000)
    return b.workload()


def bert_base(seq_len: int = 128, num_labels: int = 2) -> Workload:
    """BERT-base: 12 blocks of (q, k, v, o, fc1, fc2) on `seq_len` tokens, pooler, classifier."""
    b = _Builder()
    for _ in range(12):
        for _ in range(4):
            b.linear(seq_len, 768, 768)
        b.linear(seq_len, 768, 3072)
        b.linear(seq_len, 3072, 768)
    b.linear(1, 768, 768)
    b.linear(1, 768, num_labels)
    return b.workload()


def paper_workload(model: str) -> Workload:
    """One of MODELS, at batch 1 (the ANT set-up scales it to batch 64 with `with_batch(64)`)."""
    builders = {
        "vgg16": vgg16,
        "resnet18": resnet18,
        "resnet50": resnet50,
        "inceptionv3": inceptionv3,
        "vit": vit,
        "bert_mnli": bert_base,
        "bert_cola": bert_base,
        "bert_sst2": bert_base,
    }
    if model not in builders:
        raise ValueError(f"model={model!r}: use one of {MODELS}")
    return builders[model]()


# --- per-layer precision --------------------------------------------------------------------------


def _vit_index(block: int, j: int) -> int:  # j: 0 qkv, 1 proj, 2 fc1, 3 fc2 (index 0 is the patch conv)
    return 1 + 4 * block + j


def _bert_index(block: int, j: int) -> int:  # j: 0 q, 1 k, 2 v, 3 o, 4 fc1, 5 fc2
    return 6 * block + j


_BERT_POOLER, _BERT_CLASSIFIER = 72, 73

# ANT4-8: layers ANT keeps at 8 bits (everything else 4-bit).
ANT_8BIT_LAYERS = {
    "vgg16": {0, 15},
    "resnet18": {0, 20},
    "resnet50": {0, 53},
    "inceptionv3": {0, 1, 2, 3, 94},
    "vit": {0, 49}
    | {_vit_index(b, j) for b, j in ((0, 1), (0, 2), (0, 3), (1, 2), (2, 2), (5, 2), (6, 0), (7, 2), (10, 3))},
    "bert_mnli": {
        _bert_index(8, 0),
        _bert_index(8, 1),
        _bert_index(8, 2),
        _bert_index(9, 5),
        _BERT_POOLER,
        _BERT_CLASSIFIER,
    },
    "bert_cola": {
        _bert_index(6, 1),
        _bert_index(7, 0),
        _bert_index(7, 1),
        _bert_index(7, 2),
        _bert_index(8, 0),
        _bert_index(8, 1),
        _bert_index(8, 2),
        _bert_index(9, 5),
        _BERT_POOLER,
        _BERT_CLASSIFIER,
    },
    "bert_sst2": set(),
}

# BitFusion (int only): layers that tolerate 4 bits (everything else 8-bit).
BITFUSION_4BIT_LAYERS = {
    "vgg16": {10, 12, 14},
    "resnet18": {16, 19},
    "resnet50": {16, 17, 20, 22, 23, 26, 29, 30, 32, 33, 35, 36, 38, 39, 41, 44, 45, 48, 49, 51, 52},
    "inceptionv3": {
        29,
        32,
        33,
        38,
        42,
        45,
        46,
        52,
        53,
        55,
        56,
        57,
        58,
        61,
        62,
        64,
        65,
        66,
        67,
        68,
        69,
        70,
        71,
        72,
        75,
        78,
        79,
        81,
        82,
        83,
    }
    | set(range(85, 95)),
    "vit": {_vit_index(b, 1) for b in (0, 5, 7, 8, 9, 10)},
    "bert_mnli": (
        {_bert_index(b, 3) for b in range(12) if b != 9}
        | {_bert_index(b, 5) for b in (3, 4, 5, 6, 7, 11)}
        | {_BERT_CLASSIFIER}
    ),
    "bert_cola": set(),
    "bert_sst2": (
        {_bert_index(b, 3) for b in range(12)}
        | {_bert_index(b, 5) for b in range(12) if b not in (2, 9)}
        | {_BERT_POOLER, _BERT_CLASSIFIER}
    ),
}

DESIGN_PRECISION_RULES = ("ANT-OS", "ANT-WS", "BitFusion", "OLAccel", "AdaFloat", "BiScaled")


def paper_bits(design: str, model: str, num_layers: int) -> list[int]:
    """Per-layer bit width (activations = weights) the ANT evaluation assigns `design` on `model`."""
    if model not in MODELS:
        raise ValueError(f"model={model!r}: use one of {MODELS}")
    if design not in DESIGN_PRECISION_RULES:
        raise ValueError(f"design={design!r}: use one of {DESIGN_PRECISION_RULES}")
    vit_patch = {0} if model == "vit" else set()
    if design in ("ANT-OS", "ANT-WS"):
        return [8 if i in ANT_8BIT_LAYERS[model] else 4 for i in range(num_layers)]
    if design == "BitFusion":
        return [4 if i in BITFUSION_4BIT_LAYERS[model] else 8 for i in range(num_layers)]
    if design == "OLAccel":
        return [8 if i in ({0, num_layers - 1} | vit_patch) else 4 for i in range(num_layers)]
    if design == "AdaFloat":
        return [8] * num_layers
    return [6] * num_layers  # BiScaled
