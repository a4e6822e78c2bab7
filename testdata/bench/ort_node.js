// Times a bare onnxruntime-node session.run on one preprocessed input: what a user of
// another stack gets from the runtime alone. Used by models' TestFiguresInference.
//
//   node ort_node.js MODEL.onnx INPUT.f32 INPUT_NAME DIMS(1,1,192,256) WARMUP RUNS
//     prints one JSON line: {"p50_ms":..., "mean_ms":..., "runs":..., "version":..., "score":...}
//   node ort_node.js MODEL.onnx INPUT.f32 INPUT_NAME DIMS --serve
//     loads the session, prints {"ready":true,"version":...}, then runs one round per line
//     read on stdin ("N": N timed runs) and answers each with the line above; exits at EOF.
//     The caller alternates these rounds with its own, so both see the same machine.
const path = require('path');
const fs = require('fs');
const readline = require('readline');
const ortPath = process.env.TAKT_ORT_NODE || path.join(__dirname, '..', '..', '.deps', 'node', 'node_modules', 'onnxruntime-node');
const ort = require(ortPath);

async function main() {
  const [model, inputFile, inputName, dimsArg, warmupArg, runsArg] = process.argv.slice(2);
  const dims = dimsArg.split(',').map(Number);
  const buf = fs.readFileSync(inputFile);
  const data = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  const session = await ort.InferenceSession.create(model, { executionProviders: ['cpu'] });
  const version = require(path.join(ortPath, 'package.json')).version;
  let score = NaN;
  const run = async () => {
    // As a user would: a tensor over the input, one run, read the outputs.
    const feeds = { [inputName]: new ort.Tensor('float32', data, dims) };
    const out = await session.run(feeds);
    score = out[session.outputNames[0]].data[0];
    return out;
  };
  const round = async (runs) => {
    const times = [];
    for (let i = 0; i < runs; i++) {
      const t0 = process.hrtime.bigint();
      await run();
      times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    times.sort((a, b) => a - b);
    const mean = times.reduce((a, b) => a + b, 0) / times.length;
    return JSON.stringify({ p50_ms: times[Math.floor(times.length / 2)], mean_ms: mean, runs: times.length, version, score });
  };
  if (warmupArg === '--serve') {
    console.log(JSON.stringify({ ready: true, version }));
    const lines = readline.createInterface({ input: process.stdin });
    for await (const line of lines) {
      const runs = Number(line.trim());
      if (!Number.isInteger(runs) || runs <= 0) {
        console.error(`ort_node.js: round size ${JSON.stringify(line)} is not a positive integer`);
        process.exit(2);
      }
      console.log(await round(runs));
    }
    return;
  }
  for (let i = 0; i < Number(warmupArg); i++) await run();
  console.log(await round(Number(runsArg)));
}

main().catch((e) => { console.error(e); process.exit(1); });
