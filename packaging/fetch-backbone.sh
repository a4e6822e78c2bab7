#!/usr/bin/env bash
# fetch-backbone.sh DIR: the recommended ImageNet backbone, for `takt model train` (with
# labelled defects it joins the filter bank; `make build` fetches it) and for the backbone
# figures (`make bench`); never part of the repository or of `make test`.
#
# The npm package nsfwjs 4.4.0 (MIT) carries a TF.js graph model of MobileNetV2 width 1.4
# (TF Hub's ImageNet MobileNetV2, fine-tuned for a 5-class head) as browserify-wrapped JS.
# This packs it with npm (which checks the registry's integrity hash), unwraps model.json
# and the weight shards with node, and converts them with `takt model import-tfjs` at the
# tiles' 128 px (on splits 1-2 of the supervised figure, 128 px beat the model's own 224 px,
# and runs 3x faster). It writes DIR/mobilenet_v2_140_128.onnx, DIR/recommended.json (the
# model and layer `takt model train` uses by default, see models/README.md) and
# DIR/backbone.env (TAKT_BACKBONE, TAKT_BACKBONE_LAYER, TAKT_BACKBONE_COMPARE for the
# figures tests), and does nothing when all three exist. Needs npm, node and Go.
set -euo pipefail
dir=${1:-}
[ -n "$dir" ] || { echo "usage: $0 DIR" >&2; exit 2; }
version=4.4.0
mkdir -p "$dir"
dir=$(cd "$dir" && pwd -P) # backbone.env names the model by its absolute path
onnx=$dir/mobilenet_v2_140_128.onnx
envf=$dir/backbone.env
recf=$dir/recommended.json
if [ -s "$onnx" ] && [ -s "$envf" ] && [ -s "$recf" ]; then
	exit 0
fi
for tool in npm node; do
	command -v "$tool" >/dev/null || { echo "fetch-backbone: $tool not found (needed to fetch the npm package nsfwjs)" >&2; exit 1; }
done
if [ ! -s "$onnx" ]; then
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "nsfwjs@$version" >/dev/null && tar -xzf "nsfwjs-$version.tgz")
src=$work/package/dist/models/mobilenet_v2_mid
[ -f "$src/model.min.js" ] || { echo "fetch-backbone: nsfwjs@$version has no dist/models/mobilenet_v2_mid/model.min.js" >&2; exit 1; }
# model.min.js exports the model.json object; each group1-shardXofY.min.js a base64 string
# of the shard's bytes.
node - "$src" "$work/tfjs" <<'JS'
const fs = require("fs"), path = require("path");
const [src, dst] = process.argv.slice(2);
fs.mkdirSync(dst, { recursive: true });
const m = require(path.resolve(src, "model.min.js"));
if (m.format !== "graph-model") throw new Error("not a TF.js graph model: " + m.format);
for (const g of m.weightsManifest) {
  g.paths = g.paths.map((p) => {
    fs.writeFileSync(path.join(dst, p + ".bin"), Buffer.from(require(path.resolve(src, p + ".min.js")), "base64"));
    return p + ".bin";
  });
}
fs.writeFileSync(path.join(dst, "model.json"), JSON.stringify(m));
JS
cd "$(dirname "$0")/.."
go run ./agent/cmd/takt model import-tfjs "$work/tfjs" --width 128 --height 128 --out "$onnx.tmp"
mv "$onnx.tmp" "$onnx"
fi
# Block outputs of MobileNetV2 (TF names): expanded_conv_5/add is the last stride-8 block
# (48 channels), expanded_conv_12/add the last stride-16 block (136 channels). Both, joined
# on the stride-8 grid, did best on splits 1-2 of the supervised figure (README).
p=StatefulPartitionedCall/sequential/keras_layer/StatefulPartitionedCall/StatefulPartitionedCall/StatefulPartitionedCall/predict/MobilenetV2
cat > "$envf" <<ENV
TAKT_BACKBONE='$onnx'
TAKT_BACKBONE_LAYER='$p/expanded_conv_5/add,$p/expanded_conv_12/add'
TAKT_BACKBONE_COMPARE='$p/expanded_conv_12/add;$p/expanded_conv_5/add'
ENV
# The default of takt model train with labelled defects: the stride-16 block beside the
# filter bank (models/README.md, "Trainer results").
cat > "$recf.tmp" <<JSON
{"model": "$(basename "$onnx")", "layer": "$p/expanded_conv_12/add",
 "source": "MobileNetV2 1.4 (ImageNet, TF Hub) from the npm package nsfwjs@$version (MIT), converted by takt model import-tfjs"}
JSON
mv "$recf.tmp" "$recf"
echo "fetch-backbone: wrote $onnx (sha256 $(sha256sum "$onnx" | cut -c1-12)), $recf and $envf"
