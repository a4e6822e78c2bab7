#!/bin/sh
# copy-trainer.sh DATA OUT: a stand-in external trainer for the companion's tests. It checks
# the dataset folder contract (good/ with images, labels.json), then "trains" by copying the
# ONNX model named by $MODEL_FILE to OUT/model.onnx and writes OUT/metrics.json with the
# threshold from $MODEL_FILE.threshold and the input and output names of a template model.
set -eu
data=$1
out=$2
if [ ! -d "$data/good" ] || [ ! -f "$data/labels.json" ]; then
	echo "contract broken: $data has no good/ or no labels.json" >&2
	exit 1
fi
good=$(ls "$data/good" | wc -l | tr -d ' ')
defect=$(ls "$data/defect" 2>/dev/null | wc -l | tr -d ' ')
[ "$good" -gt 0 ] || { echo "contract broken: $data/good is empty" >&2; exit 1; }
echo "contract ok: good/ $good images, defect/ $defect images, model $TAKT_MODEL_NAME $TAKT_MODEL_VERSION, job $TAKT_JOB"
cp "$MODEL_FILE" "$out/model.onnx"
printf '{"threshold": %s, "input": {"layout": "NCHW", "color": "gray"}, "outputs": {"score": "score", "map": "anomaly_map"}, "metrics": {"trainer_good_images": %s}}\n' \
	"$(cat "$MODEL_FILE.threshold")" "$good" >"$out/metrics.json"
