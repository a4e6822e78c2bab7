// Times a bare onnxruntime-node session.run on one preprocessed input: what a user of
// another stack gets from the runtime alone. Used by models' TestFiguresInference.
//
//   node ort_node.js MODEL.onnx INPUT.f32 INPUT_NAME DIMS(1,1,192,256) WARMUP RUNS
//
// Prints one JSON line: {"p50_ms":..., "mean_ms":..., "runs":..., "version":...}.
const path = require('path');
const fs = require('fs');
const ortPath = process.env.TAKT_ORT_NODE || path.join(__dirname, '..', '..', '.deps', 'node', 'node_modules', 'onnxruntime-node');
const ort = require(ortPath);

async function main() {
  const [model, inputFile, inputName, dimsArg, warmupArg, runsArg] = process.argv.slice(2);
  const dims = dimsArg.split(',').map(Number);
  const buf = fs.readFileSync(inputFile);
  const data = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  const session = await ort.InferenceSession.create(model, { executionProviders: ['cpu'] });
  const run = async () => {
    // As a user would: a tensor over the input, one run, read the outputs.
    const feeds = { [inputName]: new ort.Tensor('float32', data, dims) };
    const out = await session.run(feeds);
    return out;
  };
  for (let i = 0; i < Number(warmupArg); i++) await run();
  const times = [];
  for (let i = 0; i < Number(runsArg); i++) {
    const t0 = process.hrtime.bigint();
    await run();
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((a, b) => a - b);
  const mean = times.reduce((a, b) => a + b, 0) / times.length;
  const version = require(path.join(ortPath, 'package.json')).version;
  console.log(JSON.stringify({ p50_ms: times[Math.floor(times.length / 2)], mean_ms: mean, runs: times.length, version }));
}

main().catch((e) => { console.error(e); process.exit(1); });
