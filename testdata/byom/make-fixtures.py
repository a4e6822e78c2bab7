#!/usr/bin/python3
"""Builds the bring-your-own-model fixtures with PyTorch's own ONNX exporter.

Each model is a small module with the structure of a real export (a torchvision ResNet,
an anomalib 2.x model with its pre- and post-processing, an Ultralytics YOLO classify and
detect head), random but seeded weights, exported with torch.onnx.export as those projects
call it. Beside each model: a few PNG inputs and PyTorch's own outputs for them
(expected.json), which Takt's tests must reproduce.

Run with Debian's PyTorch (python3-torch, python3-torchvision, python3-onnx):
    /usr/bin/python3 testdata/byom/make-fixtures.py
It rewrites testdata/byom/{resnet,anomalib,yolo-cls,yolo-det}/.
"""

import json
import math
import os
from collections import namedtuple

import numpy as np
import onnx
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------- images


def texture(rng, size):
    """A gray-brown surface with fine noise: what a good part looks like."""
    h, w = size
    base = np.array([120, 110, 95], dtype=np.float64)
    yy, xx = np.mgrid[0:h, 0:w]
    shade = 12 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    img = base[None, None, :] + shade[:, :, None] + rng.normal(0, 6, (h, w, 3))
    return img


def with_defect(img, rng, kind):
    return defect_and_mask(img, rng, kind)[0]


def defect_and_mask(img, rng, kind):
    h, w, _ = img.shape
    out = img.copy()
    cy, cx = rng.integers(h // 4, 3 * h // 4), rng.integers(w // 4, 3 * w // 4)
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == "scratch":  # a thin bright red line
        mask = (np.abs((yy - cy) - 0.6 * (xx - cx)) < 1.5) & (np.abs(xx - cx) < w // 4)
        out[mask] = [230, 40, 40]
    else:  # a dark round dent
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < (min(h, w) // 8) ** 2
        out[mask] = out[mask] * 0.3
    return out, mask


KINDS = ["good", "scratch", "dent"]


def training_batch(rng, n, size):
    """n random parts of every kind: images NCHW 0..1, class indices, defect masks."""
    xs, ys, masks = [], [], []
    for _ in range(n):
        for k, kind in enumerate(KINDS):
            img, mask = texture(rng, size), np.zeros(size, dtype=bool)
            if kind != "good":
                img, mask = defect_and_mask(img, rng, kind)
            xs.append(torch.from_numpy(to_u8(img)).permute(2, 0, 1).float() / 255)
            ys.append(k)
            masks.append(mask)
    return torch.stack(xs), torch.tensor(ys), masks


def fit_classifier(model, prepare, seed, size, steps=120):
    """A few steps of cross-entropy on synthetic parts, so that the fixtures' scores differ
    from image to image as a trained model's do."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(steps):
        x, y, _ = training_batch(rng, 4, size)
        opt.zero_grad()
        F.cross_entropy(model(prepare(x)), y).backward()
        opt.step()
    model.eval()


def to_u8(img):
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def save_images(folder, images):
    """Writes images (name -> HxWx3 uint8 RGB) as PNG; returns name -> NCHW float tensor 0..1."""
    tensors = {}
    for name, arr in images.items():
        Image.fromarray(arr, "RGB").save(os.path.join(folder, name))
        back = np.asarray(Image.open(os.path.join(folder, name)).convert("RGB"))
        assert (back == arr).all()
        tensors[name] = torch.from_numpy(back.copy()).permute(2, 0, 1).unsqueeze(0).float() / 255
    return tensors


def image_set(seed, size):
    rng = np.random.default_rng(seed)
    return {
        "good-1.png": to_u8(texture(rng, size)),
        "good-2.png": to_u8(texture(rng, size)),
        "scratch-1.png": to_u8(with_defect(texture(rng, size), rng, "scratch")),
        "dent-1.png": to_u8(with_defect(texture(rng, size), rng, "dent")),
    }


def write_expected(folder, doc):
    with open(os.path.join(folder, "expected.json"), "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")


def fresh(folder):
    path = os.path.join(HERE, folder)
    os.makedirs(path, exist_ok=True)
    for f in os.listdir(path):
        os.remove(os.path.join(path, f))
    return path


def randomize_bn(model, gen):
    """Trained-looking batch-norm statistics, so that folding them into convs is exercised."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


# ---------------------------------------------------------------- torchvision ResNet


class NarrowResNet(ResNet):
    """torchvision's ResNet-18 layout (BasicBlock, [1, 1, 1, 1] here) at a quarter of a
    sixteenth of its width, built from torchvision's own blocks and forward."""

    def __init__(self, widths=(4, 8, 16, 32), num_classes=3):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = widths[0], 1, 1, 64
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(BasicBlock, widths[0], 1)
        self.layer2 = self._make_layer(BasicBlock, widths[1], 1, stride=2)
        self.layer3 = self._make_layer(BasicBlock, widths[2], 1, stride=2)
        self.layer4 = self._make_layer(BasicBlock, widths[3], 1, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3], num_classes)


def make_resnet():
    folder = fresh("resnet")
    torch.manual_seed(18)
    model = NarrowResNet()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    fit_classifier(model, lambda x: (x - mean) / std, 18, (64, 64))
    # As torchvision's and timm's docs export a classifier: ImageNet normalization stays in
    # the data pipeline, the graph outputs logits, batch, height and width are dynamic.
    torch.onnx.export(
        model,
        torch.randn(1, 3, 64, 64),
        os.path.join(folder, "model.onnx"),
        export_params=True,
        opset_version=17,
        do_constant_folding=True,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch_size", 2: "height", 3: "width"}, "output": {0: "batch_size"}},
    )
    labels, ok = ["ok", "scratch", "dent"], "ok"
    tensors = save_images(folder, image_set(1, (64, 64)))
    cases = {}
    with torch.no_grad():
        for name, x in tensors.items():
            logits = model((x - mean) / std)[0]
            p = logits.softmax(0)
            score = float(1 - p[labels.index(ok)])
            cases[name] = {
                "logits": logits.tolist(),
                "probabilities": p.tolist(),
                "score": score,
                "class": labels[int(p.argmax())],
                "confidence": float(p.max()),
                "decision": "FAIL" if score > 0.5 else "PASS",
            }
    write_expected(folder, {
        "kind": "torchvision ResNet classifier, logits, ImageNet normalization outside the graph",
        "labels": labels, "ok_label": ok, "threshold": 0.5, "width": 64, "height": 64,
        "cases": cases,
    })


# ---------------------------------------------------------------- anomalib 2.x

InferenceBatch = namedtuple("InferenceBatch", ["pred_score", "pred_label", "anomaly_map", "pred_mask"])


class PreProcessor(nn.Module):
    """anomalib 2.x's PreProcessor: its transforms (Resize, Normalize) run inside the graph."""

    def __init__(self, size):
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x):
        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=False)
        return (x - self.mean) / self.std


class PatchDistanceModel(nn.Module):
    """A PatchCore-shaped model: locally aggregated patch features, the distance of each
    patch to its nearest neighbour in a memory bank, an upsampled and blurred anomaly map."""

    def __init__(self, size, channels=8):
        super().__init__()
        self.size = size
        self.feature = nn.Conv2d(3, channels, 3, stride=2, padding=1)
        self.pool = nn.AvgPool2d(3, 1, 1)
        self.register_buffer("memory_bank", torch.zeros(64, channels))
        sigma, k = 1.0, 5
        g = torch.exp(-((torch.arange(k) - k // 2) ** 2) / (2 * sigma**2))
        g = g / g.sum()
        self.register_buffer("blur", (g[:, None] * g[None, :]).view(1, 1, k, k))

    def features(self, x):
        f = self.pool(F.relu(self.feature(x)))
        b, c, h, w = f.shape
        return f.permute(0, 2, 3, 1).reshape(-1, c), (b, h, w)

    @staticmethod
    def euclidean_dist(x, y):
        # anomalib's PatchCore distance, written without cdist for export.
        x_norm = x.pow(2).sum(dim=-1, keepdim=True)
        y_norm = y.pow(2).sum(dim=-1, keepdim=True)
        res = x_norm - 2 * torch.matmul(x, y.transpose(-2, -1)) + y_norm.transpose(-2, -1)
        return res.clamp_min(0).sqrt()

    def forward(self, x):
        emb, (b, h, w) = self.features(x)
        scores, _ = self.euclidean_dist(emb, self.memory_bank).topk(k=1, largest=False, dim=1)
        patch = scores.reshape(b, 1, h, w)
        pred_score = patch.amax(dim=(-3, -2, -1))
        amap = F.interpolate(patch, size=self.size, mode="bilinear", align_corners=False)
        amap = F.conv2d(F.pad(amap, (2, 2, 2, 2), mode="reflect"), self.blur)
        return pred_score, amap


class PostProcessor(nn.Module):
    """anomalib 2.x's PostProcessor: min-max normalization around the learned thresholds,
    so that 0.5 is the threshold of both the image score and the map, then the labels."""

    def __init__(self):
        super().__init__()
        for k in ["image_threshold", "image_min", "image_max", "pixel_threshold", "pixel_min", "pixel_max"]:
            self.register_buffer(k, torch.tensor(0.0))

    @staticmethod
    def _normalize(preds, norm_min, norm_max, threshold):
        preds = ((preds - threshold) / (norm_max - norm_min)) + 0.5
        return preds.clamp(min=0, max=1)

    def forward(self, pred_score, anomaly_map):
        pred_score = self._normalize(pred_score, self.image_min, self.image_max, self.image_threshold)
        anomaly_map = self._normalize(anomaly_map, self.pixel_min, self.pixel_max, self.pixel_threshold)
        return InferenceBatch(pred_score=pred_score, pred_label=pred_score > 0.5,
                              anomaly_map=anomaly_map, pred_mask=anomaly_map > 0.5)


class AnomalibModule(nn.Module):
    def __init__(self, size):
        super().__init__()
        self.pre_processor = PreProcessor(size)
        self.model = PatchDistanceModel(size)
        self.post_processor = PostProcessor()

    def forward(self, x):
        return self.post_processor(*self.model(self.pre_processor(x)))


def make_anomalib():
    folder = fresh("anomalib")
    torch.manual_seed(2)
    size = (32, 32)
    module = AnomalibModule(size).eval()
    rng = np.random.default_rng(100)
    as_tensor = lambda a: torch.from_numpy(to_u8(a)).permute(2, 0, 1).unsqueeze(0).float() / 255
    with torch.no_grad():
        # "Training": a memory bank from good images, then the normalization statistics.
        good = torch.cat([as_tensor(texture(rng, (48, 48))) for _ in range(6)])
        emb, _ = module.model.features(module.pre_processor(good))
        idx = torch.randperm(emb.shape[0], generator=torch.Generator().manual_seed(3))[:64]
        module.model.memory_bank.copy_(emb[idx])
        val = [as_tensor(texture(rng, (48, 48))) for _ in range(4)]
        val += [as_tensor(with_defect(texture(rng, (48, 48)), rng, k)) for k in ["scratch", "dent", "scratch", "dent"]]
        raw = [module.model(module.pre_processor(v)) for v in val]
        img = torch.cat([s for s, _ in raw])
        pix = torch.cat([m.flatten() for _, m in raw])
        pp = module.post_processor
        pp.image_min.fill_(img.min())
        pp.image_max.fill_(img.max())
        pp.image_threshold.fill_((img[:4].max() + img[4:].min()) / 2)
        pp.pixel_min.fill_(pix.min())
        pp.pixel_max.fill_(pix.max())
        pp.pixel_threshold.fill_(pix.quantile(0.9))

    # anomalib 2.x ExportMixin.to_onnx without input_size: a 1x1 dummy input, dynamic batch,
    # height and width, output names from the fields of the InferenceBatch it returns.
    input_shape = torch.zeros((1, 3, 1, 1))
    dynamic_axes = {"input": {0: "batch_size", 2: "height", 3: "width"}, "output": {0: "batch_size"}}
    output_names = [name for name, value in module(input_shape)._asdict().items() if value is not None]
    torch.onnx.export(
        module,
        (input_shape,),
        os.path.join(folder, "model.onnx"),
        opset_version=14,
        dynamic_axes=dynamic_axes,
        input_names=["input"],
        output_names=output_names,
    )
    tensors = save_images(folder, image_set(2, (48, 48)))
    cases = {}
    with torch.no_grad():
        for name, x in tensors.items():
            out = module(x)
            score = float(out.pred_score[0])
            amap = out.anomaly_map[0, 0]
            cases[name] = {
                "score": score,
                "pred_label": bool(out.pred_label[0]),
                "decision": "FAIL" if score > 0.5 else "PASS",
                "map_max": float(amap.max()),
                "map_mean": float(amap.mean()),
                "map_corner": [float(amap[0, 0]), float(amap[0, -1]), float(amap[-1, 0]), float(amap[-1, -1])],
                "map_size": list(amap.shape),
            }
    write_expected(folder, {
        "kind": "anomalib 2.x export (pre- and post-processing in the graph), no input size",
        "threshold": 0.5, "width": 48, "height": 48, "cases": cases,
    })


# ---------------------------------------------------------------- anomalib 1.x


class InferenceModel(nn.Module):
    """anomalib 1.x's InferenceModel: the transform (resize, normalize) then the torch model;
    score normalization stays outside the graph, in metadata.json."""

    def __init__(self, model, transform):
        super().__init__()
        self.model, self.transform = model, transform

    def forward(self, batch):
        return self.model(self.transform(batch))


class PatchcoreModel1x(PatchDistanceModel):
    """anomalib 1.x's PatchcoreModel in eval mode: a dict of the raw map and score."""

    def forward(self, x):
        pred_score, amap = super().forward(x)
        return {"anomaly_map": amap, "pred_score": pred_score}


def make_anomalib1():
    folder = fresh("anomalib1")
    torch.manual_seed(21)
    size = (32, 32)
    model = PatchcoreModel1x(size).eval()
    pre = PreProcessor(size)
    rng = np.random.default_rng(121)
    as_tensor = lambda a: torch.from_numpy(to_u8(a)).permute(2, 0, 1).unsqueeze(0).float() / 255
    with torch.no_grad():
        good = torch.cat([as_tensor(texture(rng, (48, 48))) for _ in range(6)])
        emb, _ = model.features(pre(good))
        idx = torch.randperm(emb.shape[0], generator=torch.Generator().manual_seed(22))[:64]
        model.memory_bank.copy_(emb[idx])
        val = [as_tensor(texture(rng, (48, 48))) for _ in range(4)]
        val += [as_tensor(with_defect(texture(rng, (48, 48)), rng, k)) for k in ["scratch", "dent", "scratch", "dent"]]
        raw = [model(pre(v)) for v in val]
        img = torch.cat([r["pred_score"] for r in raw])
        pix = torch.cat([r["anomaly_map"].flatten() for r in raw])
    # What _get_metadata writes: the task, the thresholds and the MinMax normalization
    # state (min and max over image and pixel predictions).
    metadata = {
        "task": "segmentation",
        "image_threshold": float((img[:4].max() + img[4:].min()) / 2),
        "pixel_threshold": float(pix.quantile(0.9)),
        "min": float(torch.minimum(img.min(), pix.min())),
        "max": float(torch.maximum(img.max(), pix.max())),
    }
    with open(os.path.join(folder, "metadata.json"), "w") as f:
        json.dump(metadata, f, ensure_ascii=False, indent=4)
    inference_model = InferenceModel(model, pre).eval()
    # anomalib 1.x ExportMixin.to_onnx without input_size, as it calls the exporter
    # ("weight" for the width axis is anomalib's own spelling).
    input_shape = torch.zeros((1, 3, 1, 1))
    dynamic_axes = {"input": {0: "batch_size", 2: "height", 3: "weight"}, "output": {0: "batch_size"}}
    torch.onnx.export(
        inference_model,
        input_shape,
        os.path.join(folder, "model.onnx"),
        opset_version=14,
        dynamic_axes=dynamic_axes,
        input_names=["input"],
        output_names=["output"],
    )

    def normalize(x, threshold):  # anomalib 1.x's min-max normalization, as its inferencers apply it
        return ((x - threshold) / (metadata["max"] - metadata["min"]) + 0.5).clamp(0, 1)

    tensors = save_images(folder, image_set(5, (48, 48)))
    cases = {}
    with torch.no_grad():
        for name, x in tensors.items():
            out = inference_model(x)
            score = float(normalize(out["pred_score"], metadata["image_threshold"])[0])
            amap = normalize(out["anomaly_map"], metadata["pixel_threshold"])[0, 0]
            cases[name] = {
                "raw_score": float(out["pred_score"][0]),
                "score": score,
                "decision": "FAIL" if score > 0.5 else "PASS",
                "map_max": float(amap.max()),
                "map_mean": float(amap.mean()),
                "map_corner": [float(amap[0, 0]), float(amap[0, -1]), float(amap[-1, 0]), float(amap[-1, -1])],
                "map_size": list(amap.shape),
            }
    write_expected(folder, {
        "kind": "anomalib 1.x export (transform in the graph, raw outputs, metadata.json beside it), no input size",
        "threshold": 0.5, "width": 48, "height": 48, "cases": cases,
    })


# ---------------------------------------------------------------- Ultralytics YOLO


def autopad(k):
    return k // 2


class Conv(nn.Module):
    """Ultralytics' Conv: Conv2d without bias, BatchNorm, SiLU."""

    def __init__(self, c1, c2, k=1, s=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k), bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Classify(nn.Module):
    """Ultralytics' Classify head: softmax inside the graph outside training."""

    def __init__(self, c1, c2, c_=32):
        super().__init__()
        self.conv = Conv(c1, c_, 1, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(p=0.0, inplace=True)
        self.linear = nn.Linear(c_, c2)

    def forward(self, x):
        x = self.linear(self.drop(self.pool(self.conv(x)).flatten(1)))
        return x if self.training else x.softmax(1)


class DFL(nn.Module):
    def __init__(self, c1=16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = nn.Parameter(torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1))
        self.c1 = c1

    def forward(self, x):
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def make_anchors(feats, strides, grid_cell_offset=0.5):
    anchor_points, stride_tensor = [], []
    for i, stride in enumerate(strides):
        _, _, h, w = feats[i].shape
        sx = torch.arange(end=w, dtype=torch.float) + grid_cell_offset
        sy = torch.arange(end=h, dtype=torch.float) + grid_cell_offset
        sy, sx = torch.meshgrid(sy, sx, indexing="ij")
        anchor_points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_tensor.append(torch.full((h * w, 1), stride, dtype=torch.float))
    return torch.cat(anchor_points), torch.cat(stride_tensor)


def dist2bbox(distance, anchor_points, xywh=True, dim=-1):
    lt, rb = distance.chunk(2, dim)
    x1y1 = anchor_points - lt
    x2y2 = anchor_points + rb
    if xywh:
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)
    return torch.cat((x1y1, x2y2), dim)


class Detect(nn.Module):
    """Ultralytics' Detect head as exported: [N, 4 + classes, anchors], boxes cx, cy, w, h
    in input pixels (DFL-decoded), class scores after a sigmoid, no NMS."""

    def __init__(self, nc, ch, stride, reg_max=16):
        super().__init__()
        self.nc, self.nl, self.reg_max = nc, len(ch), reg_max
        self.no = nc + reg_max * 4
        self.stride = torch.tensor(stride, dtype=torch.float)
        c2, c3 = 8, 8
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1)) for x in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
        self.dfl = DFL(reg_max)

    def bias_init(self, imgsz):
        for a, b, s in zip(self.cv2, self.cv3, self.stride):
            a[-1].bias.data[:] = 1.0
            b[-1].bias.data[: self.nc] = math.log(5 / self.nc / (imgsz / s) ** 2)

    def forward(self, x):
        for i in range(self.nl):
            x[i] = torch.cat((self.cv2[i](x[i]), self.cv3[i](x[i])), 1)
        shape = x[0].shape
        x_cat = torch.cat([xi.view(shape[0], self.no, -1) for xi in x], 2)
        anchors, strides = (t.transpose(0, 1) for t in make_anchors(x, self.stride, 0.5))
        box, cls = x_cat.split((self.reg_max * 4, self.nc), 1)
        dbox = dist2bbox(self.dfl(box), anchors.unsqueeze(0), xywh=True, dim=1) * strides
        return torch.cat((dbox, cls.sigmoid()), 1)


class YOLOClassify(nn.Module):
    def __init__(self, nc):
        super().__init__()
        self.model = nn.Sequential(Conv(3, 8, 3, 2), Conv(8, 16, 3, 2), Classify(16, nc))
        self.stride = torch.Tensor([1])  # as Ultralytics' ClassificationModel

    def forward(self, x):
        return self.model(x)


class YOLODetect(nn.Module):
    def __init__(self, nc):
        super().__init__()
        self.b1 = nn.Sequential(Conv(3, 8, 3, 2), Conv(8, 16, 3, 2), Conv(16, 16, 3, 2))  # stride 8
        self.b2 = Conv(16, 16, 3, 2)  # stride 16
        self.detect = Detect(nc, (16, 16), (8.0, 16.0))
        self.stride = self.detect.stride

    def forward(self, x):
        p3 = self.b1(x)
        p4 = self.b2(p3)
        return self.detect([p3, p4])


def latest_opset():
    # Ultralytics' get_latest_opset(): the newest opset this torch exports, minus one.
    return max(int(k[14:]) for k in vars(torch.onnx) if "symbolic_opset" in k) - 1


def ultralytics_export(model, path, task, names, imgsz, stride, dynamic=False):
    """Ultralytics' Exporter.export_onnx (dynamic=False and batch 1 are its defaults), then
    its metadata, each value written as str(value)."""
    im = torch.zeros(1, 3, imgsz, imgsz)
    if dynamic:
        dynamic = {"images": {0: "batch", 2: "height", 3: "width"}}
        if task == "detect":
            dynamic["output0"] = {0: "batch", 2: "anchors"}
    torch.onnx.export(
        model,
        im,
        path,
        verbose=False,
        opset_version=latest_opset(),
        do_constant_folding=True,
        input_names=["images"],
        output_names=["output0"],
        dynamic_axes=dynamic or None,
    )
    metadata = {
        "description": f"Ultralytics YOLOv8n-{task} model trained on parts.yaml",
        "author": "Ultralytics",
        "date": "2026-12-08T00:00:00",
        "version": "8.3.0",
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "stride": stride,
        "task": task,
        "batch": 1,
        "imgsz": [imgsz, imgsz],
        "names": dict(enumerate(names)),
    }
    m = onnx.load(path)
    for k, v in metadata.items():
        meta = m.metadata_props.add()
        meta.key, meta.value = k, str(v)
    onnx.save(m, path)


def make_yolo_cls():
    folder = fresh("yolo-cls")
    torch.manual_seed(8)
    names = ["good", "scratch", "dent"]
    model = YOLOClassify(len(names))
    fit_classifier(model, lambda x: x, 8, (64, 64))
    ultralytics_export(model, os.path.join(folder, "model.onnx"), "classify", names, 64, 1)
    tensors = save_images(folder, image_set(3, (64, 64)))
    cases = {}
    with torch.no_grad():
        for name, x in tensors.items():
            p = model(x)[0]  # Ultralytics classify: 0..1 RGB, no mean/std, softmax inside
            score = float(1 - p[0])
            cases[name] = {
                "probabilities": p.tolist(),
                "score": score,
                "class": names[int(p.argmax())],
                "confidence": float(p.max()),
                "decision": "FAIL" if score > 0.5 else "PASS",
            }
    write_expected(folder, {
        "kind": "Ultralytics YOLO classify export (softmax inside, names/imgsz/task metadata)",
        "labels": names, "ok_label": "good", "threshold": 0.5, "width": 64, "height": 64,
        "cases": cases,
    })


def nms(prediction, conf_thres=0.25, iou_thres=0.7, max_det=300, max_wh=7680):
    """Ultralytics' non_max_suppression for one image, class-aware, one label per box."""
    nc = prediction.shape[1] - 4
    x = prediction[0].transpose(0, 1)  # [anchors, 4 + nc]
    xy, wh = x[:, :2], x[:, 2:4]
    box = torch.cat((xy - wh / 2, xy + wh / 2), 1)
    conf, j = x[:, 4:4 + nc].max(1, keepdim=True)
    keep = conf.view(-1) > conf_thres
    box, conf, j = box[keep], conf[keep], j[keep]
    order = conf.view(-1).argsort(descending=True)
    box, conf, j = box[order], conf[order], j[order]
    i = torchvision.ops.nms(box + j.float() * max_wh, conf.view(-1), iou_thres)[:max_det]
    return box[i], conf[i].view(-1), j[i].view(-1)


def fit_detector(model, seed, imgsz, steps=150):
    """A few steps on synthetic parts: anchors whose centre lies in a defect's box learn its
    class and the box; the rest learn background."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(steps):
        x, y, masks = training_batch(rng, 3, (imgsz, imgsz))
        out = model(x)  # [N, 4 + nc, A]
        anchors, strides = make_anchors([torch.zeros(1, 1, imgsz // 8, imgsz // 8), torch.zeros(1, 1, imgsz // 16, imgsz // 16)], [8, 16])
        centres = anchors * strides
        cls_t = torch.zeros(out.shape[0], out.shape[1] - 4, out.shape[2])
        box_t = torch.zeros(out.shape[0], 4, out.shape[2])
        pos = torch.zeros(out.shape[0], out.shape[2], dtype=torch.bool)
        for n, (k, m) in enumerate(zip(y.tolist(), masks)):
            if k == 0:
                continue
            ys, xs = np.nonzero(m)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            inside = (centres[:, 0] >= x0) & (centres[:, 0] < x1) & (centres[:, 1] >= y0) & (centres[:, 1] < y1)
            cls_t[n, k - 1, inside] = 1
            box_t[n, :, inside] = torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dtype=torch.float).view(4, 1)
            pos[n] = inside
        loss = F.binary_cross_entropy(out[:, 4:], cls_t)
        if pos.any():
            loss = loss + (out[:, :4] - box_t).abs().permute(0, 2, 1)[pos].mean() / imgsz
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def make_yolo_det():
    folder = fresh("yolo-det")
    torch.manual_seed(11)
    names = ["scratch", "dent"]
    imgsz = 64
    model = YOLODetect(len(names))
    model.detect.bias_init(imgsz)
    fit_detector(model, 11, imgsz)
    ultralytics_export(model, os.path.join(folder, "model.onnx"), "detect", names, imgsz, 32)
    # The same model exported with dynamic=True: batch, height, width and anchors dynamic.
    ultralytics_export(model, os.path.join(folder, "model-dynamic.onnx"), "detect", names, imgsz, 32, dynamic=True)
    tensors = save_images(folder, image_set(4, (imgsz, imgsz)))
    cases = {}
    with torch.no_grad():
        for name, x in tensors.items():
            y = model(x)
            boxes, conf, cls = nms(y)
            fail = [float(c) for c, k in zip(conf, cls)]
            score = max(fail, default=0.0)
            cases[name] = {
                "boxes": [
                    {"class": names[int(k)], "confidence": float(c), "xyxy": [float(v) for v in b]}
                    for b, c, k in zip(boxes, conf, cls)
                ],
                "score": score,
                "decision": "FAIL" if score > 0.25 else "PASS",
                "output_shape": list(y.shape),
            }
    write_expected(folder, {
        "kind": "Ultralytics YOLO detect export ([1, 4+K, anchors], no NMS), NMS as Ultralytics' predict",
        "labels": names, "threshold": 0.25, "nms_confidence": 0.25, "nms_iou": 0.7,
        "width": imgsz, "height": imgsz, "cases": cases,
    })


def v10postprocess(preds, max_det, nc):
    """Ultralytics' v10postprocess: the end-to-end head's top boxes by best class score, no
    NMS; rows x1, y1, x2, y2, score, class."""
    boxes, scores = preds.split([4, nc], dim=-1)
    max_scores = scores.amax(dim=-1)
    max_scores, index = torch.topk(max_scores, max_det, dim=-1)
    index = index.unsqueeze(-1)
    boxes = torch.gather(boxes, dim=1, index=index.repeat(1, 1, boxes.shape[-1]))
    scores = torch.gather(scores, dim=1, index=index.repeat(1, 1, scores.shape[-1]))
    scores, index = torch.topk(scores.flatten(1), max_det, dim=-1)
    labels = index % nc
    index = index // nc
    boxes = boxes.gather(dim=1, index=index.unsqueeze(-1).repeat(1, 1, boxes.shape[-1]))
    return torch.cat([boxes, scores.unsqueeze(-1), labels.unsqueeze(-1).to(boxes.dtype)], dim=-1)


class YOLOEnd2End(nn.Module):
    """A YOLOv10-style end-to-end export: the detect head's boxes as x1, y1, x2, y2, then
    v10postprocess, so the graph outputs [1, max_det, 6] and needs no NMS."""

    def __init__(self, model, max_det):
        super().__init__()
        self.model, self.max_det = model, max_det

    def forward(self, x):
        y = self.model(x).permute(0, 2, 1)  # [N, anchors, 4 + nc]
        xy, wh, cls = y[..., :2], y[..., 2:4], y[..., 4:]
        preds = torch.cat((xy - wh / 2, xy + wh / 2, cls), -1)
        return v10postprocess(preds, self.max_det, cls.shape[-1])


def make_yolo_e2e():
    folder = fresh("yolo-e2e")
    torch.manual_seed(12)
    names = ["scratch", "dent"]
    imgsz = 64
    model = YOLODetect(len(names))
    model.detect.bias_init(imgsz)
    fit_detector(model, 12, imgsz)
    e2e = YOLOEnd2End(model, 20).eval()
    ultralytics_export(e2e, os.path.join(folder, "model.onnx"), "detect", names, imgsz, 32)
    tensors = save_images(folder, image_set(6, (imgsz, imgsz)))
    cases = {}
    with torch.no_grad():
        for name, x in tensors.items():
            rows = e2e(x)[0]
            rows = rows[rows[:, 4] > 0.25]  # Ultralytics' predict keeps rows above conf
            score = max((float(r[4]) for r in rows), default=0.0)
            cases[name] = {
                "boxes": [{"class": names[int(r[5])], "confidence": float(r[4]), "xyxy": [float(v) for v in r[:4]]} for r in rows],
                "score": score,
                "decision": "FAIL" if score > 0.25 else "PASS",
            }
    write_expected(folder, {
        "kind": "YOLOv10-style end-to-end export ([1, 20, 6]: x1, y1, x2, y2, score, class; no NMS needed)",
        "labels": names, "threshold": 0.25, "width": imgsz, "height": imgsz, "cases": cases,
    })


if __name__ == "__main__":
    torch.set_num_threads(1)
    make_resnet()
    make_anomalib()
    make_anomalib1()
    make_yolo_cls()
    make_yolo_det()
    make_yolo_e2e()
