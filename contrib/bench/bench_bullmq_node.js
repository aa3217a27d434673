// Node BullMQ side of contrib/bench/bench_bullmq.py: `node bench_bullmq_node.js '<json>'`.
// Adds `n` no-op jobs one at a time (creates/s), then processes them with one Worker at
// `concurrency` (jobs/s, from the worker's start until the last completion). Prints JSON.
'use strict';
const path = require('path');
const { Queue, Worker } = require(path.join(__dirname, '..', 'bullmq-interop', 'node_modules', 'bullmq'));

async function main(o) {
  const u = new URL(o.url);
  const connection = { host: u.hostname, port: Number(u.port || 6379), maxRetriesPerRequest: null };
  const queue = new Queue(o.queue, { connection });
  let t = process.hrtime.bigint();
  for (let i = 0; i < o.n; i++) {
    await queue.add('noop', { i }, { removeOnComplete: 1000 });
  }
  const createSeconds = Number(process.hrtime.bigint() - t) / 1e9;
  let done = 0;
  let finish;
  const finished = new Promise((resolve) => (finish = resolve));
  t = process.hrtime.bigint();
  const worker = new Worker(o.queue, async () => null, { connection, concurrency: o.concurrency });
  worker.on('completed', () => {
    done += 1;
    if (done === o.n) finish();
  });
  await finished;
  const runSeconds = Number(process.hrtime.bigint() - t) / 1e9;
  await worker.close();
  await queue.close();
  return { creates_per_s: o.n / createSeconds, jobs_per_s: o.n / runSeconds };
}

main(JSON.parse(process.argv[2])).then(
  (out) => {
    process.stdout.write(JSON.stringify(out) + '\n');
    process.exit(0);
  },
  (err) => {
    console.error(err && err.stack ? err.stack : String(err));
    process.exit(1);
  },
);
