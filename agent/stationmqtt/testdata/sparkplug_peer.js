// A Sparkplug B host as seen by the station: subscribes to spBv1.0/# on the
// broker, decodes every message with Eclipse Tahu's sparkplug-payload and prints
// one JSON line per message; a line "rebirth <group> <node>" on stdin sends the
// Node Control/Rebirth command.
const mqtt = require('mqtt');
const sparkplug = require('sparkplug-payload').get('spBv1.0');
const readline = require('readline');

const [broker, clientId] = process.argv.slice(2);
const client = mqtt.connect(broker, { clientId, clean: false, reconnectPeriod: 100, protocolVersion: 4 });
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const num = (v) => (v && typeof v === 'object' && 'low' in v ? Number(v.toString()) : v);

client.on('connect', () => {
  client.subscribe('spBv1.0/#', { qos: 1 }, (err) => out(err ? { error: String(err) } : { ready: true }));
});
client.on('message', (topic, payload) => {
  let p;
  try {
    p = sparkplug.decodePayload(payload);
  } catch (e) {
    out({ topic, error: 'decode: ' + e.message });
    return;
  }
  const metrics = {};
  for (const m of p.metrics || []) {
    metrics[m.name] = { type: m.type, value: m.isNull ? null : num(m.value) };
  }
  out({ topic, seq: p.seq === undefined || p.seq === null ? null : num(p.seq), timestamp: num(p.timestamp), metrics });
});
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, group, node] = line.trim().split(' ');
  if (cmd === 'rebirth') {
    const payload = sparkplug.encodePayload({
      timestamp: Date.now(),
      metrics: [{ name: 'Node Control/Rebirth', type: 'Boolean', value: true }],
    });
    client.publish(`spBv1.0/${group}/NCMD/${node}`, payload, { qos: 1 }, (err) => out({ sent: 'rebirth', error: err ? String(err) : undefined }));
  }
});
