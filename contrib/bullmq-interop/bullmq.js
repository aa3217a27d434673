// Node BullMQ side of tickkit's interop tests: `node bullmq.js <command> '<json options>'`.
// Every command prints one JSON document on stdout.
//   worker   run a Worker (and QueueEvents from the stream's start) until `expect` completions
//   produce  add jobs with Queue.add / upsertJobScheduler
//   promote  Job.promote() the jobs `ids` (delayed -> wait, as a dashboard's promote)
//   counts   print Queue.getJobCounts()
//   jobs     print Queue.getJobs(types) (or Queue.getJob for `ids`) as plain records
//   otel-produce / otel-worker  the same with BullMQ's telemetry (bullmq-otel); print spans
'use strict';
const { Queue, Worker, QueueEvents } = require('bullmq');

function connectionOf(url) {
  const u = new URL(url);
  const conn = { host: u.hostname, port: Number(u.port || 6379), maxRetriesPerRequest: null };
  if (u.password) conn.password = decodeURIComponent(u.password);
  if (u.pathname && u.pathname.length > 1) conn.db = Number(u.pathname.slice(1));
  if (u.protocol === 'rediss:') conn.tls = {};
  return conn;
}

async function worker(o) {
  const connection = connectionOf(o.url);
  const processed = [];
  const completed = new Set();
  const events = new QueueEvents(o.queue, { connection, prefix: o.prefix, lastEventId: '0' });
  await events.waitUntilReady();
  const w = new Worker(
    o.queue,
    async (job) => {
      processed.push({ id: job.id, name: job.name, data: job.data, attemptsMade: job.attemptsMade });
      const failTimes = job.data && job.data.failTimes;
      if (failTimes && job.attemptsMade < failTimes) {
        throw new Error(`attempt ${job.attemptsMade + 1} fails on purpose`);
      }
      return { ok: true };
    },
    { connection, prefix: o.prefix, concurrency: o.concurrency || 1 },
  );
  const done = () =>
    completed.size >= (o.expect || 0) &&
    (o.expectIds || []).every((id) => completed.has(id)) &&
    Object.entries(o.expectPrefixes || {}).every(
      ([p, n]) => [...completed].filter((id) => id.startsWith(p)).length >= n,
    );
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, o.timeoutMs || 20000);
    events.on('completed', ({ jobId }) => {
      completed.add(jobId);
      if (done()) {
        clearTimeout(timer);
        resolve();
      }
    });
    if (done()) {
      clearTimeout(timer);
      resolve();
    }
  });
  await w.close();
  await events.close();
  return { processed, completed: [...completed] };
}

async function produce(o) {
  const queue = new Queue(o.queue, { connection: connectionOf(o.url), prefix: o.prefix });
  const ids = {};
  for (const add of o.jobs || []) {
    const job = await queue.add(add.name, add.data, add.opts || {});
    ids[add.key] = job.id;
  }
  for (const s of o.schedulers || []) {
    const job = await queue.upsertJobScheduler(s.id, s.repeat, s.template);
    ids[s.id] = job && job.id;
  }
  await queue.close();
  return ids;
}

async function promote(o) {
  const queue = new Queue(o.queue, { connection: connectionOf(o.url), prefix: o.prefix });
  const promoted = [];
  for (const id of o.ids || []) {
    const job = await queue.getJob(id);
    await job.promote();
    promoted.push(id);
  }
  await queue.close();
  return promoted;
}

// OpenTelemetry for the trace-context interop: spans are kept in memory and printed
function setupTracing() {
  const api = require('@opentelemetry/api');
  const { W3CTraceContextPropagator } = require('@opentelemetry/core');
  const { AsyncLocalStorageContextManager } = require('@opentelemetry/context-async-hooks');
  const {
    BasicTracerProvider,
    InMemorySpanExporter,
    SimpleSpanProcessor,
  } = require('@opentelemetry/sdk-trace-base');
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  api.trace.setGlobalTracerProvider(provider);
  api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  api.propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  const { BullMQOtel } = require('bullmq-otel');
  const spans = () =>
    exporter.getFinishedSpans().map((s) => ({
      name: s.name,
      kind: s.kind,
      traceId: s.spanContext().traceId,
      spanId: s.spanContext().spanId,
      parentSpanId: (s.parentSpanContext && s.parentSpanContext.spanId) || s.parentSpanId || null,
    }));
  return { api, telemetry: new BullMQOtel({ tracerName: 'interop' }), spans };
}

// add jobs inside a root span, with BullMQ's telemetry (bullmq-otel): opts.telemetry.metadata
async function otelProduce(o) {
  const { api, telemetry, spans } = setupTracing();
  const queue = new Queue(o.queue, { connection: connectionOf(o.url), prefix: o.prefix, telemetry });
  const tracer = api.trace.getTracer('interop-test');
  const ids = {};
  await tracer.startActiveSpan('node-root', async (root) => {
    for (const add of o.jobs || []) {
      const job = await queue.add(add.name, add.data, add.opts || {});
      ids[add.key] = job.id;
    }
    root.end();
  });
  await queue.close();
  return { ids, spans: spans() };
}

// a Worker with BullMQ's telemetry until the jobs `expectIds` completed; prints the spans
async function otelWorker(o) {
  const { api, telemetry, spans } = setupTracing();
  const connection = connectionOf(o.url);
  const seen = {};
  const completed = new Set();
  const w = new Worker(
    o.queue,
    async (job) => {
      const active = api.trace.getActiveSpan();
      seen[job.id] = active ? active.spanContext() : null;
      return { ok: true };
    },
    { connection, prefix: o.prefix, telemetry },
  );
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, o.timeoutMs || 20000);
    w.on('completed', (job) => {
      completed.add(job.id);
      if ((o.expectIds || []).every((id) => completed.has(id))) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  await w.close();
  return { seen, completed: [...completed], spans: spans() };
}

async function counts(o) {
  const queue = new Queue(o.queue, { connection: connectionOf(o.url), prefix: o.prefix });
  const c = await queue.getJobCounts();
  await queue.close();
  return c;
}

function record(job) {
  return {
    id: job.id,
    name: job.name,
    data: job.data,
    attemptsMade: job.attemptsMade,
    failedReason: job.failedReason,
    stacktrace: job.stacktrace,
    processedOn: job.processedOn,
    finishedOn: job.finishedOn,
    processedBy: job.processedBy,
    repeatJobKey: job.repeatJobKey,
  };
}

async function jobs(o) {
  const queue = new Queue(o.queue, { connection: connectionOf(o.url), prefix: o.prefix });
  let found;
  if (o.ids) {
    found = [];
    for (const id of o.ids) {
      const job = await queue.getJob(id);
      if (job) found.push(job);
    }
  } else {
    found = await queue.getJobs(o.types || ['completed', 'failed']);
  }
  await queue.close();
  return found.map(record);
}

const commands = {
  worker,
  jobs,
  produce,
  promote,
  counts,
  'otel-produce': otelProduce,
  'otel-worker': otelWorker,
};
const [command, raw] = process.argv.slice(2);
if (!commands[command]) {
  console.error(`usage: node bullmq.js worker|produce|promote|counts|jobs|otel-produce|otel-worker '<json>'`);
  process.exit(2);
}
commands[command](JSON.parse(raw || '{}')).then(
  (out) => {
    process.stdout.write(JSON.stringify(out) + '\n');
    process.exit(0);
  },
  (err) => {
    console.error(err && err.stack ? err.stack : String(err));
    process.exit(1);
  },
);
